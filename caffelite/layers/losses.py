"""Caffe's smaller loss layers: SigmoidCrossEntropy, Hinge, Contrastive, Infogain and
MultinomialLogistic.

All produce a scalar top with loss weight 1 (``LossLayer``); targets, labels and
the infogain matrix never receive gradients (a request for one is an error, as
in Caffe). In backward the loss weight is ``top[0].diff``.
"""

from __future__ import annotations

from caffelite.blob import Blob
from caffelite.layer import register_layer
from caffelite.layers.loss import (
    BATCH_SIZE,
    LossLayer,
    get_normalizer,
    int_labels,
    normalization_mode,
)
from caffelite.layers.softmax import softmax
from caffelite.proto import caffe_pb2
from caffelite.shapes import labelled_axis

#: Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log.
LOG_THRESHOLD = 1e-20


def _no_label_gradient(layer, propagate_down, indices) -> None:
    for i in indices:
        if i < len(propagate_down) and propagate_down[i]:
            raise layer.error(f"cannot backpropagate to bottom[{i}] (labels or targets)")


def _num(blob) -> int:
    return blob.shape[0] if blob.num_axes else 1


# ---- SigmoidCrossEntropyLoss ---------------------------------------------------------


def sigmoid_cross_entropy(xp, x, t):
    """Elementwise ``-[t log s(x) + (1 - t) log(1 - s(x))]`` without overflow:
    ``max(x, 0) - x t + log(1 + exp(-|x|))``."""
    return xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(xp, x):
    """The logistic function in a form that cannot overflow."""
    return 0.5 * xp.tanh(0.5 * x) + 0.5


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross-entropy of ``sigmoid(bottom 0)`` against targets in [0, 1] (bottom 1, same count).

    Targets whose int cast equals ``loss_param.ignore_label`` are skipped. The sum
    is divided per ``loss_param.normalization``; with neither ``normalization`` nor
    the legacy ``normalize`` set Caffe divides by the batch size (BATCH_SIZE), not
    by the valid count: that keeps old models' loss scale.
    """

    def setup(self, bottom, top) -> None:
        loss_param = self.layer_param.loss_param
        has_ignore = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label if has_ignore else None
        self.normalization = normalization_mode(loss_param, default=BATCH_SIZE)

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(
                f"inputs must have the same count; got bottom[0] of shape {bottom[0].shape} "
                f"and bottom[1] of shape {bottom[1].shape}"
            )
        self.outer = _num(bottom[0])
        self.inner = bottom[0].count // self.outer if self.outer else 0

    def _valid(self, bottom):
        if self.ignore_label is None:
            return None
        return bottom[1].data.reshape(bottom[0].shape).astype(self.xp.int64) != self.ignore_label

    def forward(self, bottom, top) -> None:
        xp = self.xp
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        losses = sigmoid_cross_entropy(xp, x, t)
        valid = self._valid(bottom)
        if valid is None:
            loss, count = losses.sum(), losses.size
        else:
            loss, count = (losses * valid).sum(), int(valid.sum())
        self.normalizer = get_normalizer(self.normalization, self.outer, self.inner, count)
        top[0].data[...] = loss / self.normalizer

    def backward(self, top, propagate_down, bottom) -> None:
        _no_label_gradient(self, propagate_down, [1])
        if not propagate_down[0]:
            return
        xp = self.xp
        diff = bottom[0].diff
        xp.subtract(sigmoid(xp, bottom[0].data), bottom[1].data.reshape(diff.shape), out=diff)
        valid = self._valid(bottom)
        if valid is not None:
            diff *= valid
        diff *= self.loss_weight_of(top) / self.normalizer


# ---- HingeLoss -----------------------------------------------------------------------


@register_layer("HingeLoss")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss of scores ``(N, K, ...)`` against labels in [0, K).

    With ``s = -x`` at the true class and ``s = x`` elsewhere, the loss is
    ``sum(max(0, 1 + s)) / N`` (L1, default) or ``sum(max(0, 1 + s)^2) / N`` (L2).
    """

    def setup(self, bottom, top) -> None:
        self.norm = self.layer_param.hinge_loss_param.norm
        if self.norm not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            raise self.error(f"unknown hinge_loss_param.norm {self.norm}")
        self._margin = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.num = _num(bottom[0])
        self.dim = bottom[0].count // self.num if self.num else 0
        if bottom[1].count != self.num:
            raise self.error(
                f"needs one label per item: scores of shape {bottom[0].shape} need "
                f"{self.num} labels, got bottom[1] of shape {bottom[1].shape}"
            )
        shape = (self.num, self.dim)
        if (
            self._margin is None
            or self._margin.shape != shape
            or self._margin.dtype != bottom[0].dtype
        ):
            self._margin = self.xp.empty(shape, dtype=bottom[0].dtype)
            self._rows = self.xp.arange(self.num)

    def forward(self, bottom, top) -> None:
        xp = self.xp
        self._labels, _ = int_labels(self, bottom[1].data.reshape(-1), self.dim)
        margin = self._margin
        margin[...] = bottom[0].data.reshape(margin.shape)
        margin[self._rows, self._labels] *= -1
        margin += 1
        xp.maximum(margin, 0, out=margin)
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            loss = margin.sum()
        else:
            loss = xp.vdot(margin, margin)
        top[0].data[...] = loss / self.num

    def backward(self, top, propagate_down, bottom) -> None:
        _no_label_gradient(self, propagate_down, [1])
        if not propagate_down[0]:
            return
        xp = self.xp
        diff = bottom[0].diff.reshape(self._margin.shape)
        weight = self.loss_weight_of(top)
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            xp.sign(self._margin, out=diff)
            scale = weight / self.num
        else:
            diff[...] = self._margin
            scale = 2 * weight / self.num
        diff[self._rows, self._labels] *= -1
        diff *= scale


# ---- ContrastiveLoss -----------------------------------------------------------------


@register_layer("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Siamese loss of feature pairs ``a``, ``b`` (N, C) and similarity labels ``y`` (N).

    With ``d = ||a - b||``: similar pairs (``int(y) != 0``) cost ``d^2``; dissimilar
    ones ``max(margin - d, 0)^2``, or ``max(margin - d^2, 0)`` with
    ``legacy_version``. The sum is divided by ``2 N``. Both features get
    gradients. Like Caffe, the non-legacy gradient divides by ``d + 1e-4``, not
    ``d``, so it stays finite for identical features.
    """

    exact_num_bottom_blobs = 3

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        a, b, y = bottom
        flat = a.num_axes >= 2 and all(d == 1 for d in a.shape[2:])
        if a.shape != b.shape or not flat:
            raise self.error(
                "the two feature bottoms must have the same shape (N, C) or (N, C, 1, 1); "
                f"got bottom[0] of shape {a.shape} and bottom[1] of shape {b.shape}"
            )
        if y.count != a.shape[0]:
            raise self.error(
                f"needs one similarity label per pair: features of shape {a.shape} need "
                f"{a.shape[0]} labels, got bottom[2] of shape {y.shape}"
            )
        self.dims = (a.shape[0], a.shape[1])

    def forward(self, bottom, top) -> None:
        xp = self.xp
        param = self.layer_param.contrastive_loss_param
        margin = float(param.margin)
        num = self.dims[0]
        self._diff = diff = bottom[0].data.reshape(self.dims) - bottom[1].data.reshape(self.dims)
        self._dist_sq = dist_sq = xp.einsum("ij,ij->i", diff, diff)
        self._similar = bottom[2].data.reshape(-1).astype(xp.int64) != 0
        if param.legacy_version:
            apart = xp.maximum(margin - dist_sq, 0)
        else:
            apart = xp.maximum(margin - xp.sqrt(dist_sq), 0) ** 2
        loss = xp.where(self._similar, dist_sq, apart).sum()
        top[0].data[...] = loss / num / 2

    def backward(self, top, propagate_down, bottom) -> None:
        _no_label_gradient(self, propagate_down, [2])
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = self.xp
        param = self.layer_param.contrastive_loss_param
        margin = float(param.margin)
        num = self.dims[0]
        if param.legacy_version:
            mdist = margin - self._dist_sq
            beta = -xp.ones_like(mdist)
        else:
            dist = xp.sqrt(self._dist_sq)
            mdist = margin - dist
            beta = -mdist / (dist + 1e-4)
        # per-pair factor on (a - b): 1 when similar, beta inside the margin, else 0
        factor = xp.where(self._similar, 1.0, xp.where(mdist > 0, beta, 0.0))
        grad = self._diff * factor[:, None]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * self.loss_weight_of(top) / num
                xp.multiply(grad, alpha, out=bottom[i].diff.reshape(self.dims))


# ---- InfogainLoss --------------------------------------------------------------------


def read_infogain(layer, path: str, dtype) -> Blob:
    """The infogain matrix from a binaryproto BlobProto file."""
    from caffelite.prototxt import read_binary

    blob = Blob(dtype=dtype)
    blob.from_proto(read_binary(path, caffe_pb2.BlobProto()))
    return blob


@register_layer("InfogainLoss")
class InfogainLossLayer(LossLayer):
    """A SoftmaxWithLoss whose target is weighted by an infogain matrix ``H`` (K x K).

    ``loss = -sum_positions sum_k H[label, k] log(max(p_k, 1e-20)) / normalizer``
    with ``p`` the softmax of bottom 0 along ``infogain_loss_param.axis``; ``H = I``
    gives SoftmaxWithLoss. ``H`` is bottom 2 or the BlobProto file
    ``infogain_loss_param.source``. An optional top 1 exposes the probabilities.
    """

    exact_num_bottom_blobs = -1
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom, top) -> None:
        loss_param = self.layer_param.loss_param
        has_ignore = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label if has_ignore else None
        if loss_param.HasField("normalize"):
            raise self.error("loss_param.normalize is deprecated here; use normalization")
        self.normalization = loss_param.normalization
        self._infogain = None
        if len(bottom) < 3:
            source = self.layer_param.infogain_loss_param.source
            if not source:
                raise self.error(
                    "needs the infogain matrix: give a third bottom or infogain_loss_param.source"
                )
            self._infogain = read_infogain(self, source, bottom[0].dtype)
        self._prob = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        xp = self.xp
        self.axis, self.dims = labelled_axis(
            self, bottom[0], bottom[1], self.layer_param.infogain_loss_param.axis
        )
        outer, k, inner = self.dims
        infogain = bottom[2] if len(bottom) == 3 else self._infogain
        if infogain.count != k * k:
            raise self.error(
                f"the infogain matrix must have {k} x {k} = {k * k} values for the {k} classes "
                f"of the predictions of shape {bottom[0].shape}; got shape {infogain.shape}"
            )
        if self._prob is None or self._prob.dtype != bottom[0].dtype:
            self._prob = Blob(dtype=bottom[0].dtype)
        self._prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
            top[1].share_data(self._prob)
        self._scratch = xp.empty((outer, 1, inner), dtype=bottom[0].dtype)

    def _matrix(self, bottom):
        blob = bottom[2] if len(bottom) == 3 else self._infogain
        k = self.dims[1]
        return blob.data.reshape(k, k)

    def forward(self, bottom, top) -> None:
        xp = self.xp
        outer, k, inner = self.dims
        prob = self._prob.data.reshape(self.dims)
        softmax(xp, bottom[0].data.reshape(self.dims), prob, self._scratch)
        labels, valid = int_labels(self, bottom[1].data.reshape(outer, inner), k, self.ignore_label)
        rows = self._matrix(bottom)[labels]  # (outer, inner, K): H row of each label
        log_prob = xp.log(xp.maximum(prob, LOG_THRESHOLD))
        per_position = xp.einsum("oik,oki->oi", rows, log_prob)
        if valid is None:
            loss, count = -per_position.sum(), per_position.size
        else:
            loss, count = -(per_position * valid).sum(), int(valid.sum())
        top[0].data[...] = loss / get_normalizer(self.normalization, outer, inner, count)

    def backward(self, top, propagate_down, bottom) -> None:
        _no_label_gradient(self, propagate_down, [1, 2])
        if not propagate_down[0]:
            return
        xp = self.xp
        outer, k, inner = self.dims
        labels, valid = int_labels(self, bottom[1].data.reshape(outer, inner), k, self.ignore_label)
        matrix = self._matrix(bottom)
        row_sums = matrix.sum(axis=1)[labels]  # (outer, inner)
        diff = bottom[0].diff.reshape(self.dims)
        xp.multiply(self._prob.data.reshape(self.dims), row_sums[:, None, :], out=diff)
        diff -= matrix[labels].transpose(0, 2, 1)
        if valid is None:
            count = outer * inner
        else:
            diff *= valid[:, None, :]
            count = int(valid.sum())
        diff *= self.loss_weight_of(top) / get_normalizer(self.normalization, outer, inner, count)


# ---- MultinomialLogisticLoss ---------------------------------------------------------


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """``-mean(log(max(p[label], 1e-20)))`` for probabilities ``p`` (N, K) given directly
    (no softmax inside; SoftmaxWithLoss fuses the two stably)."""

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        labels = bottom[1]
        if labels.num_axes == 0 or any(d != 1 for d in labels.shape[1:]):
            raise self.error(
                f"labels (bottom[1]) must have shape (N,) or (N, 1, 1, 1); got {labels.shape}"
            )
        self.num = _num(bottom[0])
        self.dim = bottom[0].count // self.num if self.num else 0
        self._rows = self.xp.arange(self.num)

    def forward(self, bottom, top) -> None:
        xp = self.xp
        self._labels, _ = int_labels(self, bottom[1].data.reshape(-1), self.dim)
        probs = bottom[0].data.reshape(self.num, self.dim)[self._rows, self._labels]
        top[0].data[...] = -xp.log(xp.maximum(probs, LOG_THRESHOLD)).sum() / self.num

    def backward(self, top, propagate_down, bottom) -> None:
        _no_label_gradient(self, propagate_down, [1])
        if not propagate_down[0]:
            return
        xp = self.xp
        data = bottom[0].data.reshape(self.num, self.dim)
        diff = bottom[0].diff.reshape(self.num, self.dim)
        diff[...] = 0
        probs = xp.maximum(data[self._rows, self._labels], LOG_THRESHOLD)
        diff[self._rows, self._labels] = -self.loss_weight_of(top) / self.num / probs
