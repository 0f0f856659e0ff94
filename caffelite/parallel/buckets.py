"""Gradient buckets: the train net's parameters fused into a few flat buffers.

One message per parameter blob would pay the network's latency dozens of times per
iteration; one message for all of them could not start before backward reaches the
first layer. So, as PyTorch DDP and Horovod do, parameters are grouped in the order
backward finishes them (last layers first) into buckets of about ``cap_bytes`` (a
small first bucket, ``first_cap_bytes``, so the first message leaves early). A bucket
is complete once backward has passed the lowest layer that uses any of its
parameters (shared parameters gather diffs from several layers).
"""

from __future__ import annotations

import numpy as np

from caffelite import backend
from caffelite.blob import Blob

#: PyTorch DDP's defaults: a 1 MiB first bucket, then 25 MiB buckets.
FIRST_BUCKET_BYTES = 1 << 20
BUCKET_BYTES = 25 << 20


class Bucket:
    """Some parameters' diffs packed end to end into one flat host buffer."""

    def __init__(self, params: list[Blob], ready_layer: int):
        self.params = params
        #: Backward has finished this bucket's diffs once it has run this layer.
        self.ready_layer = ready_layer
        sizes = [blob.count for blob in params]
        self.bounds = np.cumsum([0, *sizes])
        self.buffer = np.empty(int(self.bounds[-1]), dtype=params[0].dtype)

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def _slices(self):
        for blob, start, end in zip(self.params, self.bounds[:-1], self.bounds[1:], strict=True):
            yield blob, self.buffer[start:end]

    def pack(self) -> np.ndarray:
        """Copy the diffs into the buffer; the buffer."""
        for blob, flat in self._slices():
            flat[...] = backend.to_numpy(blob.diff).reshape(-1)
        return self.buffer

    def unpack(self, scale: float) -> None:
        """Set each diff to its slice of the buffer times ``scale``."""
        xp = backend.xp()
        for blob, flat in self._slices():
            blob.diff[...] = xp.asarray(flat.reshape(blob.shape)) * blob.dtype.type(scale)


def readiness(net) -> list[int]:
    """Per learnable parameter, the lowest layer whose backward adds to its diff."""
    ready = [len(net.layers)] * len(net.learnable_params)
    for (layer_id, _), learnable_id in zip(
        net.param_layer_indices, net.learnable_param_ids, strict=True
    ):
        ready[learnable_id] = min(ready[learnable_id], layer_id)
    return ready


def plan_buckets(
    net, first_cap_bytes: int = FIRST_BUCKET_BYTES, cap_bytes: int = BUCKET_BYTES
) -> list[Bucket]:
    """The net's learnable parameters in buckets, in the order backward completes them."""
    ready = readiness(net)
    order = sorted(range(len(ready)), key=lambda i: (-ready[i], -i))
    buckets: list[Bucket] = []
    members: list[int] = []
    size = 0
    for param_id in order:
        blob = net.learnable_params[param_id]
        dtype_changes = members and blob.dtype != net.learnable_params[members[0]].dtype
        if dtype_changes:
            buckets.append(_bucket(net, members, ready))
            members, size = [], 0
        members.append(param_id)
        size += blob.count * blob.dtype.itemsize
        if size >= (cap_bytes if buckets else first_cap_bytes):
            buckets.append(_bucket(net, members, ready))
            members, size = [], 0
    if members:
        buckets.append(_bucket(net, members, ready))
    return buckets


def _bucket(net, members: list[int], ready: list[int]) -> Bucket:
    return Bucket([net.learnable_params[i] for i in members], min(ready[i] for i in members))
