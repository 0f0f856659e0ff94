"""The common ground of loss layers (Caffe's LossLayer) and the loss normaliser.

A loss layer takes (prediction, target) and produces one scalar of shape ``()``.
It weighs 1 in the net's objective unless ``loss_weight`` says otherwise, and the
Net never forces a gradient into its target (bottom 1): labels are not learned.
"""

from __future__ import annotations

import numpy

from caffelite import device_checks
from caffelite.errors import CaffeliteError
from caffelite.layer import Layer
from caffelite.proto import caffe_pb2

_MODES = caffe_pb2.LossParameter.NormalizationMode
FULL, VALID, BATCH_SIZE, NONE = (
    _MODES.Value(name) for name in ("FULL", "VALID", "BATCH_SIZE", "NONE")
)


def normalization_mode(loss_param, default: int = VALID) -> int:
    """The effective NormalizationMode of a LossParameter.

    ``normalization`` wins when set. Otherwise the legacy ``normalize`` flag, when
    set, chooses VALID (true) or BATCH_SIZE (false); with neither set the layer's
    default applies (VALID for most layers; SigmoidCrossEntropyLoss differs).
    """
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return VALID if loss_param.normalize else BATCH_SIZE
    return default


def get_normalizer(mode: int, outer_num: int, inner_num: int, valid_count: int = -1) -> float:
    """What the summed loss is divided by (Caffe's LossLayer::GetNormalizer).

    ``valid_count`` is the number of non-ignored positions, or -1 when the layer
    does not count them (VALID then means every position). The result is at
    least 1, so a batch whose labels are all ignored gives loss 0 instead of NaN.
    """
    if mode == FULL:
        normalizer = outer_num * inner_num
    elif mode == VALID:
        normalizer = outer_num * inner_num if valid_count == -1 else valid_count
    elif mode == BATCH_SIZE:
        normalizer = outer_num
    elif mode == NONE:
        normalizer = 1
    else:
        raise CaffeliteError(
            f"unknown loss normalization mode {mode!r}; "
            f"known: {', '.join(f'{name} ({value})' for name, value in _MODES.items())}"
        )
    return float(max(1, normalizer))


class LossLayer(Layer):
    """Base class of loss layers: 2 bottoms, a scalar top 0 with loss weight 1.

    Subclasses implement ``forward``/``backward``; in backward the loss weight is
    ``top[0].diff`` (a scalar the Net sets), by which the gradient must be scaled.
    """

    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def default_loss_weight(self, top_index: int) -> float:
        return 1.0 if top_index == 0 else 0.0

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Targets (bottom 1) never receive a forced gradient."""
        return bottom_index != 1

    def reshape(self, bottom, top) -> None:
        """Check that prediction and target agree on the first axis; size the scalar."""
        if bottom[0].num_axes and bottom[1].num_axes and bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(
                "the prediction and the target must have the same first dimension; "
                f"got bottom[0] of shape {bottom[0].shape} and bottom[1] of shape "
                f"{bottom[1].shape}"
            )
        top[0].reshape(())

    @staticmethod
    def loss_weight_of(top):
        """The scalar gradient of the objective w.r.t. ``top[0]``: a Python float, or a
        0-d device array on the device (reading it there would stall every iteration)."""
        weight = top[0].diff.reshape(-1)[0]
        return float(weight) if isinstance(weight, numpy.generic) else weight


def int_labels(layer, values, size: int, ignore_label: int | None = None, context: str = ""):
    """Labels cast to int as Caffe does (truncation), and the mask of non-ignored ones.

    The mask is None when nothing is ignored. Non-ignored labels outside
    ``[0, size)`` are an error naming the first one (``context`` says where the
    classes come from); ignored ones come back as 0.
    """
    xp = layer.xp
    on_device = not isinstance(values, numpy.ndarray)
    finite = xp.isfinite(values).all()
    if not on_device and not finite:
        raise layer.error(
            f"labels must be finite numbers; got {float(values[~xp.isfinite(values)][0])}"
        )
    labels = values.astype(xp.int64)
    valid = None
    if ignore_label is not None:
        valid = labels != ignore_label
        labels = xp.where(valid, labels, 0)
    bad = (labels < 0) | (labels >= size)
    if on_device:  # no round trip per batch: checked at the next display (device_checks)
        rule = f"labels must be finite integers in [0, {size}){context}"
        if ignore_label is not None:
            rule += f" or the ignore_label {ignore_label}"
        device_checks.check(layer, ~finite | bad.any(), rule)
        return xp.where(bad, 0, labels), valid
    if bool(bad.any()):
        raise layer.error(
            f"label {float(values[bad][0]):g} is out of range: labels must be integers in "
            f"[0, {size}){context}"
            + (f" or the ignore_label {ignore_label}" if ignore_label is not None else "")
        )
    return labels, valid
