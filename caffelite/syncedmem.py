"""SyncedMemory: one flat buffer with a host copy and a device copy (Caffe's syncedmem.hpp).

A blob in GPU mode has its values in two places: host memory, where pycaffe code reads
and writes ``blob.data`` as a numpy array, and device memory, where the layers compute.
A head state says which copy is current:

* ``UNINITIALIZED``: nothing allocated yet; the first side asked for is allocated, zeroed;
* ``HEAD_AT_CPU`` / ``HEAD_AT_GPU``: that side was handed out for writing, the other is stale;
* ``SYNCED``: both hold the same values.

``cpu_data()`` / ``gpu_data()`` bring their side up to date (copying only when it is
stale) and leave the head where it is, so reading is free once synced; the ``mutable_``
forms also move the head to their side, because the caller may write. This is the one
place where values move between host and device.

Without a device (CPU mode) the buffer is the host copy alone, and every call returns it.
"""

from __future__ import annotations

import numpy

UNINITIALIZED = "UNINITIALIZED"
HEAD_AT_CPU = "HEAD_AT_CPU"
HEAD_AT_GPU = "HEAD_AT_GPU"
SYNCED = "SYNCED"


class SyncedMemory:
    """``size`` values of ``dtype`` on the host and, given a ``device`` array module
    (CuPy, or :mod:`caffelite.fake_device` in tests), on the device."""

    __slots__ = ("size", "dtype", "device", "head", "_cpu", "_gpu")

    def __init__(self, size: int, dtype, device=None):
        self.size = int(size)
        self.dtype = numpy.dtype(dtype)
        self.device = device
        self.head = UNINITIALIZED
        self._cpu = None
        self._gpu = None

    # ---- host side ------------------------------------------------------------------
    def cpu_data(self) -> numpy.ndarray:
        """The host copy, up to date; for reading (it does not move the head)."""
        if self.head == UNINITIALIZED:
            self._cpu = numpy.zeros(self.size, dtype=self.dtype)
            self.head = HEAD_AT_CPU
        elif self.head == HEAD_AT_GPU:
            if self._cpu is None:
                self._cpu = numpy.empty(self.size, dtype=self.dtype)
            self.device.asnumpy(self._gpu, out=self._cpu)
            self.head = SYNCED
        return self._cpu

    def mutable_cpu_data(self) -> numpy.ndarray:
        """The host copy, up to date, for writing: the device copy becomes stale."""
        cpu = self.cpu_data()
        if self.device is not None:
            self.head = HEAD_AT_CPU
        return cpu

    # ---- device side ----------------------------------------------------------------
    def gpu_data(self):
        """The device copy, up to date; for reading (it does not move the head)."""
        if self.device is None:
            raise RuntimeError("this memory has no device copy (it was made in CPU mode)")
        if self.head == UNINITIALIZED:
            self._gpu = self.device.zeros(self.size, dtype=self.dtype)
            self.head = HEAD_AT_GPU
        elif self.head == HEAD_AT_CPU:
            if self._gpu is None:
                self._gpu = self.device.empty(self.size, dtype=self.dtype)
            self._gpu.set(self._cpu)
            self.head = SYNCED
        return self._gpu

    def mutable_gpu_data(self):
        """The device copy, up to date, for writing: the host copy becomes stale."""
        gpu = self.gpu_data()
        self.head = HEAD_AT_GPU
        return gpu

    def __repr__(self) -> str:
        where = "host only" if self.device is None else self.device.__name__
        return f"SyncedMemory({self.size} x {self.dtype.name}, {where}, {self.head})"


class DeviceUpload:
    """Host-to-device copies made by a worker thread, off the net's way: Caffe's prefetch
    thread pushing each batch to the GPU (``async_gpu_push``).

    On CuPy the thread copies from pinned host buffers (``host_empty``) on a CUDA stream
    of its own and waits for the copy there, so the net's stream never waits for one; a
    batch buffer is rewritten only after the net's copy out of it has run (``consumed``
    records that point on the net's stream, ``upload`` makes its stream wait for it).
    On the fake device the same calls copy at once (and are counted per thread).
    """

    def __init__(self, device, device_id: int = 0):
        self.device = device
        self.device_id = int(device_id)
        self._cuda = hasattr(device, "cuda")
        self._stream = None

    def host_empty(self, shape, dtype) -> numpy.ndarray:
        """A host buffer to fill and upload from: pinned memory on CuPy."""
        if self._cuda:
            import cupyx

            return cupyx.empty_pinned(shape, dtype=dtype)
        return numpy.empty(shape, dtype=dtype)

    def upload(self, host: numpy.ndarray, out=None, after=None):
        """``host`` copied into the device array ``out`` (made anew when it is None or of
        another shape), once the net has passed ``after`` (from ``consumed``); the copy
        is complete when this returns. The device array."""
        if self._cuda and self._stream is None:  # first call, in the worker thread
            self.device.cuda.Device(self.device_id).use()
            self._stream = self.device.cuda.Stream(non_blocking=True)
        if out is None or out.shape != host.shape or out.dtype != host.dtype:
            out = self.device.empty(host.shape, dtype=host.dtype)
        if not self._cuda:
            out.set(host)
            return out
        if after is not None:
            self._stream.wait_event(after)
        out.set(host, stream=self._stream)
        self._stream.synchronize()
        return out

    def consumed(self):
        """A mark on the net's stream after what it has queued so far (None off CUDA)."""
        if not self._cuda:
            return None
        event = self.device.cuda.Event(disable_timing=True)
        event.record()
        return event
