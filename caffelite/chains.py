"""BatchNorm, Scale and ReLU in place on one blob: one pass forward, one pass backward.

ResNet-style nets follow each Convolution with BatchNorm and Scale, in place on its top,
and often a ReLU. With the statistics fixed (``use_global_stats``: a net fine-tuned with
frozen statistics, or a deploy net run backward), the three are per-channel maps, and
run one layer at a time they cost three passes over the blob each way, plus Scale's copy
of its input. :func:`caffelite.kernels.normalize_scale_forward` and ``..._backward`` do
each direction in one pass, with every operation of the layers in the same order, so
tops, bottom diffs and parameter gradients are the layers' own to the bit (tested). The
forward also writes what each layer keeps for its backward (BatchNorm's std, Scale's
input), so the layers may be run one at a time afterwards as well.

The Net uses chains for whole passes only: hooks, ``debug_info`` and partial passes
(``forward(start=...)``) run every layer, as :mod:`caffelite.fold` does in TEST nets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from caffelite import kernels


@dataclass
class Chain:
    """BatchNorm at ``first`` and the layers after it, in place on one blob."""

    first: int
    batch_norm: object
    scale: object
    relu: object = None

    @property
    def last(self) -> int:
        return self.first + (2 if self.relu is not None else 1)

    def forward(self, net) -> None:
        """The chain's layers' forward, reshapes included, in one pass."""
        for layer_id in range(self.first, self.last + 1):
            net.layers[layer_id].reshape(net.bottom_vecs[layer_id], net.top_vecs[layer_id])
        with net.device_scope():  # in GPU mode the blobs' device arrays, as in a layer
            self._forward(net)

    def _forward(self, net) -> None:
        blob = net.top_vecs[self.first][0]
        mean, std = self.batch_norm.global_statistics()
        scale = self.scale
        shift = scale.blobs[scale.bias_index].data if scale.bias_term else None
        slope = self.relu.negative_slope if self.relu is not None else 0.0
        kernels.normalize_scale_forward(
            _channels(blob.data),
            _channels(scale._saved_input),
            mean,
            std,
            scale.blobs[0].data,
            shift,
            self.relu is not None,
            slope,
        )

    def backward(self, net) -> bool:
        """The chain's layers' backward in one pass; False (nothing done) where the
        gradient stops at the chain's bottom, which the layers handle themselves."""
        if not net.bottom_need_backward[self.first][0]:
            return False
        with net.device_scope():
            self._backward(net)
        return True

    def _backward(self, net) -> None:
        blob, scale = net.top_vecs[self.first][0], self.scale
        xp = scale.xp
        sums = xp.empty((2, self.batch_norm.channels), dtype=numpy.float64)
        slope = self.relu.negative_slope if self.relu is not None else 0.0
        kernels.normalize_scale_backward(
            _channels(blob.data),
            _channels(scale._saved_input),
            _channels(blob.diff),
            self.batch_norm.std,
            scale.blobs[0].data,
            self.relu is not None,
            slope,
            sums[0],
            sums[1],
        )
        dtype = blob.diff.dtype
        if scale.param_propagate_down[0]:
            scale.blobs[0].diff[...] += sums[0].astype(dtype)
        if scale.bias_term and scale.param_propagate_down[scale.bias_index]:
            scale.blobs[scale.bias_index].diff[...] += sums[1].astype(dtype)


def _channels(array):
    """``(n, C, positions)``: the kernels' view of a blob with channels on axis 1."""
    return array.reshape(array.shape[0], array.shape[1], -1)


def plan(net) -> dict[int, Chain]:
    """The net's chains, by the id of their BatchNorm."""
    chains = {}
    for layer_id in range(len(net.layers)):
        chain = _chain_at(net, layer_id)
        if chain is not None:
            chains[layer_id] = chain
    return chains


def _chain_at(net, first: int):
    layers = net.layers
    bn = layers[first]
    if bn.layer_param.type != "BatchNorm" or not bn.use_global_stats:
        return None
    if first + 1 >= len(layers) or not _in_place(net, first):
        return None
    blob = net.top_vecs[first][0]
    if blob.num_axes < 2 or bn.channels != blob.shape[1]:
        return None
    scale = layers[first + 1]
    if not (scale.layer_param.type == "Scale" and _in_place(net, first + 1, blob)):
        return None
    per_channel = (bn.channels,)
    operands = [scale.blobs[0]] + ([scale.blobs[scale.bias_index]] if scale.bias_term else [])
    if scale.axis % blob.num_axes != 1 or any(b.shape != per_channel for b in operands):
        return None
    chain = Chain(first, bn, scale)
    after = first + 2
    if after < len(layers) and layers[after].layer_param.type == "ReLU":
        if _in_place(net, after, blob):
            chain.relu = layers[after]
    if any(any(layers[i].loss_weights) for i in range(first, chain.last + 1)):
        return None  # a loss on a chain layer's top is Net.forward_layer's to compute
    return chain


def _in_place(net, layer_id: int, blob=None) -> bool:
    """One bottom and one top, the same blob (and ``blob`` where given). For Scale, one
    bottom also means its operand is learned, the case the chain computes."""
    bottoms, tops = net.bottom_vecs[layer_id], net.top_vecs[layer_id]
    if len(bottoms) != 1 or len(tops) != 1 or bottoms[0] is not tops[0]:
        return False
    return blob is None or bottoms[0] is blob
