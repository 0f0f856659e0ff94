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

from caffelite.blob import Blob

#: PyTorch DDP's defaults: a 1 MiB first bucket, then 25 MiB buckets.
FIRST_BUCKET_BYTES = 1 << 20
BUCKET_BYTES = 25 << 20


class Bucket:
    """Some parameters' diffs packed end to end into one flat buffer on their device.

    In CPU mode the buffer is the host array MPI sends. In GPU mode it is a device
    array (packed and unpacked by device copies, no transfer per blob), and ``host`` is
    its staging copy for an all-reduce through MPI: one copy each way per bucket.
    """

    def __init__(self, params: list[Blob], ready_layer: int):
        self.params = params
        #: Backward has finished this bucket's diffs once it has run this layer.
        self.ready_layer = ready_layer
        #: The device module the diffs live on (None: the host, CPU mode).
        self.device = params[0].device
        sizes = [blob.count for blob in params]
        self.bounds = np.cumsum([0, *sizes])
        count, dtype = int(self.bounds[-1]), params[0].dtype
        self.host = np.empty(count, dtype=dtype)
        self.buffer = self.host if self.device is None else self.device.empty(count, dtype=dtype)

    @property
    def nbytes(self) -> int:
        return self.host.nbytes

    def _slices(self):
        for blob, start, end in zip(self.params, self.bounds[:-1], self.bounds[1:], strict=True):
            yield blob, self.buffer[start:end]

    def pack(self):
        """Copy the diffs into the buffer, on their device; the buffer."""
        on_device = self.device is not None
        for blob, flat in self._slices():
            flat[...] = (blob.gpu_diff() if on_device else blob.cpu_diff()).reshape(-1)
        return self.buffer

    def pack_to_host(self) -> np.ndarray:
        """Pack, then stage the buffer in host memory (GPU mode); the host buffer."""
        self.pack()
        if self.device is not None:
            self.device.asnumpy(self.buffer, out=self.host)
        return self.host

    def unpack(self, scale: float, from_host: bool = True) -> None:
        """Set each diff to its slice of the buffer times ``scale`` (after copying the
        host buffer back to the device, where it was staged there)."""
        on_device = self.device is not None
        if on_device and from_host:
            self.buffer.set(self.host)
        for blob, flat in self._slices():
            target = blob.mutable_gpu_diff() if on_device else blob.mutable_cpu_diff()
            target[...] = flat.reshape(blob.shape)
            target *= blob.dtype.type(scale)


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


class BucketSchedule:
    """When each bucket's all-reduce starts, for a solver's step (both reducers use it).

    With ``layer_wise`` (Caffe's ``layer_wise_reduce``), a bucket starts as soon as the
    last backward pass of the step (the ``iter_size``-th) has run its lowest layer, while
    backward goes on below it; otherwise every bucket starts once backward is done.
    ``start(bucket)`` hands one bucket to the communicator.
    """

    def __init__(self, buckets: list[Bucket], iter_size: int, layer_wise: bool, start):
        self.buckets = buckets
        self.iter_size = iter_size
        self.layer_wise = layer_wise
        self._start = start
        self.in_step = False
        self.passes = 0
        #: How many buckets have been handed over in this step.
        self.started = 0

    def begin_step(self) -> None:
        self.in_step, self.passes, self.started = True, 0, 0

    def after_layer_backward(self, layer_id: int) -> bool:
        """Start what backward has finished; whether this was the step's last pass."""
        if not self.in_step:
            return False  # a backward outside the solver's step: not ours to reduce
        last_pass = self.passes == self.iter_size - 1  # the diffs are final
        if last_pass and self.layer_wise:
            self.start_ready(layer_id)
        if layer_id == 0:
            self.passes += 1
        return last_pass

    def start_ready(self, layer_id: int = -1) -> None:
        """Start every bucket that backward has finished (-1: all that are left)."""
        while self.started < len(self.buckets):
            bucket = self.buckets[self.started]
            if bucket.ready_layer < layer_id:
                return
            self._start(bucket)
            self.started += 1

    def end_step(self) -> None:
        self.in_step = False
