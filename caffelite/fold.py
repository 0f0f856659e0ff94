"""TEST-phase folding: BatchNorm, Scale and ReLU run inside the Convolution before them.

What inference engines do to a deploy net: a Convolution followed, in place on its top,
by BatchNorm with ``use_global_stats``, Scale (one learned ``(C,)`` operand, optional
bias) and/or ReLU computes ``relu((W x + b) * s + t)`` per channel, with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``. The convolution applies
that in one pass over its output (:func:`caffelite.kernels.channel_affine`) and the
folded layers do not run.

Only in-place chains fold: the top blob then ends each forward with the same value,
fused or not, so nothing a user reads disappears. ``s`` and ``t`` are computed from the
layers' blobs at every forward, so weights loaded or edited later are honoured and
``net.params`` always shows the unfolded values. Folding is used only for a whole
forward pass (a partial ``forward(start=..., end=...)`` runs every layer), and a backward
after a folded forward first reruns the forward unfolded, so gradients are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from caffelite import backend, kernels
from caffelite.layer import TEST


@dataclass
class Epilogue:
    """The folded layers after one Convolution, and their per-channel effect."""

    channels: int
    batch_norm: object = None
    scale: object = None
    relu: object = None
    layer_ids: list[int] = field(default_factory=list)

    def apply(self, y, bias=None) -> None:
        """The chain's pass over ``y``; ``bias``: the convolution's, not yet added (then
        ``relu((y + bias) * s + t)``, as ``y * s + (bias * s + t)``)."""
        kernels.channel_affine(y, *self.affine(y, bias))

    def affine(self, y, bias=None):
        """``(scale, shift, relu, negative_slope)`` of the chain, with ``bias`` as in
        :meth:`apply`, in ``y``'s dtype and on its device: the arguments of
        :func:`caffelite.kernels.channel_affine`, for a kernel that applies them itself."""
        xp = backend.get_array_module(y)  # s and t live where y does (GPU mode: the device)
        relu = self.relu is not None
        slope = self.relu.negative_slope if relu else 0.0
        if self.batch_norm is None and self.scale is None:  # ReLU alone: s = 1, t = bias
            ones = xp.ones(self.channels, dtype=y.dtype)  # the general path's values, exactly
            shift = xp.zeros_like(ones) if bias is None else bias.astype(y.dtype, copy=False)
            return ones, shift, relu, slope
        s = xp.ones(self.channels, dtype=numpy.float64)
        t = xp.zeros(self.channels, dtype=numpy.float64)
        if self.batch_norm is not None:
            blobs = self.batch_norm.blobs
            stored = float(blobs[2].data[0])
            factor = 0.0 if stored == 0 else 1.0 / stored
            s = 1.0 / xp.sqrt(blobs[1].data * factor + self.batch_norm.eps)
            t = -blobs[0].data * factor * s
        if self.scale is not None:
            gamma = self.scale.blobs[0].data
            s, t = s * gamma, t * gamma
            if self.scale.bias_term:
                t = t + self.scale.blobs[self.scale.bias_index].data
        if bias is not None:
            t = t + bias * s
        return s.astype(y.dtype), t.astype(y.dtype), relu, slope


def plan(net) -> dict[int, Epilogue]:
    """The foldable chains of a TEST net: ``{convolution layer id: Epilogue}``."""
    if net.phase != TEST or net.param.force_backward:
        return {}  # force_backward: backward follows each forward, and needs every layer
    readers: dict[int, list[int]] = {}
    for layer_id, bottoms in enumerate(net.bottom_vecs):
        for blob in bottoms:
            readers.setdefault(id(blob), []).append(layer_id)
    folds = {}
    for layer_id, layer in enumerate(net.layers):
        if layer.layer_param.type != "Convolution" or len(net.top_vecs[layer_id]) != 1:
            continue
        top = net.top_vecs[layer_id][0]
        epilogue = Epilogue(channels=layer.num_output)
        following = readers.get(id(top), [])
        for next_id in following:
            if next_id <= layer_id:
                continue
            if not _in_place_on(net, next_id, top) or not _extends(
                epilogue, net.layers[next_id], top
            ):
                break
            epilogue.layer_ids.append(next_id)
        if epilogue.layer_ids and layer.channel_axis == 1:
            folds[layer_id] = epilogue
    return folds


def _in_place_on(net, layer_id: int, blob) -> bool:
    bottoms, tops = net.bottom_vecs[layer_id], net.top_vecs[layer_id]
    return len(bottoms) == 1 and len(tops) == 1 and bottoms[0] is blob and tops[0] is blob


def _extends(epilogue: Epilogue, layer, top) -> bool:
    """Add ``layer`` (in place on ``top``) to the chain if it may come next (BatchNorm,
    Scale over the channel axis, then ReLU)."""
    kind = layer.layer_param.type
    done_bn, done_scale = epilogue.batch_norm is not None, epilogue.scale is not None
    if epilogue.relu is not None:
        return False
    if kind == "BatchNorm" and not (done_bn or done_scale) and layer.use_global_stats:
        epilogue.batch_norm = layer
        return True
    if kind == "Scale" and not done_scale and len(layer.blobs) >= 1:
        channel_axis = layer.axis % top.num_axes  # -3 is the channels only of 4-D blobs
        if layer.blobs[0].shape == (epilogue.channels,) and channel_axis == 1:
            epilogue.scale = layer
            return True
        return False
    if kind == "ReLU":
        epilogue.relu = layer
        return True
    return False


def forward(net, folds: dict[int, Epilogue]) -> float:
    """One whole forward pass with ``folds`` applied; the weighted loss."""
    skipped = {i for epilogue in folds.values() for i in epilogue.layer_ids}
    loss = 0.0
    for layer_id, layer in enumerate(net.layers):
        if layer_id in skipped:
            continue
        layer.epilogue = folds.get(layer_id)
        try:
            loss += net.forward_layer(layer_id)
        finally:
            layer.epilogue = None
    return loss
