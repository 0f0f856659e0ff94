"""The one place that chooses the array module, the device and the default float type.

Layers never import numpy for array math; they ask for ``xp()`` (``self.xp`` in a layer),
which is numpy, or the device's module (CuPy) while a net built in GPU mode runs its
layers (:func:`device_scope`). The mode (``set_mode_cpu`` / ``set_mode_gpu``) decides
where the blobs of nets built from then on keep their values; a net then runs on the
device it was built for, whatever the mode later is, because its layers' scratch
arrays live there.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy

_default_dtype = numpy.dtype(numpy.float32)
_device = None  # the device's array module: CuPy, or caffelite.fake_device in tests
_gpu_mode = False
_device_id = 0
#: The array module layers compute with now: None (numpy) outside a device scope.
_scope: contextvars.ContextVar = contextvars.ContextVar("caffelite_device_scope", default=None)


def xp():
    """The array module to compute with here: the device's inside a device scope."""
    return _scope.get() or numpy


class device_scope:
    """Within it, ``xp()`` is ``device`` and blobs hand out their device arrays
    (``device=None``: numpy and host arrays, as for a Python layer in GPU mode)."""

    __slots__ = ("_device", "_token")

    def __init__(self, device):
        self._device = device

    def __enter__(self):
        self._token = _scope.set(self._device)
        return self._device

    def __exit__(self, *exc) -> None:
        _scope.reset(self._token)


def current_scope():
    """The device module of the enclosing device scope, or None."""
    return _scope.get()


def new_memory_device():
    """The device new blob memory goes to: the scope's, else the mode's (None: host only)."""
    scoped = _scope.get()
    if scoped is not None:
        return scoped
    return _device if _gpu_mode else None


def get_array_module(*arrays):
    """The module that owns ``arrays`` (numpy for numpy arrays), Chainer-style."""
    for array in arrays:
        if isinstance(array, numpy.ndarray):
            continue
        if _device is not None and isinstance(array, _device.ndarray):
            return _device
        if type(array).__module__.startswith("cupy"):
            import cupy

            return cupy
    return numpy


def to_numpy(array) -> numpy.ndarray:
    """A host copy of ``array`` for I/O (serialisation, printing)."""
    if isinstance(array, numpy.ndarray):
        return array
    if hasattr(array, "get"):
        return array.get()
    return numpy.asarray(array)


def is_gpu_mode() -> bool:
    return _gpu_mode


def set_mode_cpu() -> None:
    global _gpu_mode
    _gpu_mode = False


def set_mode_gpu() -> None:
    """Nets built from now on keep their blobs on the device and run their layers there."""
    global _gpu_mode
    if _device is None:
        use_device(_device_module())
        set_device(_device_id)  # a set_device() that came first
    _gpu_mode = True


#: ``CAFFELITE_DEVICE=fake`` makes GPU mode use :mod:`caffelite.fake_device` instead of
#: CuPy: for tests that start other processes (``mpirun``, the CLI) without a GPU.
DEVICE_ENV_VAR = "CAFFELITE_DEVICE"


def _device_module():
    """The device GPU mode uses: CuPy, or the fake device where the environment says so."""
    import os

    choice = os.environ.get(DEVICE_ENV_VAR, "cupy")
    if choice == "fake":
        from caffelite import fake_device

        return fake_device
    if choice != "cupy":
        from caffelite.errors import CaffeliteError

        raise CaffeliteError(
            f"{DEVICE_ENV_VAR}={choice!r}: expected 'cupy' (the default) or 'fake'"
        )
    return _import_cupy()


def _import_cupy():
    from caffelite.errors import CaffeliteError

    try:
        import cupy
    except ImportError as exc:
        raise CaffeliteError(
            f"GPU mode needs CuPy, which is not installed ({exc}): pip install -e '.[gpu]' "
            "(or run on the CPU: set_mode_cpu(), solver_mode: CPU)"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its CUDARuntimeError without a driver
        raise CaffeliteError(f"GPU mode: CuPy finds no usable CUDA device ({exc})") from None
    if count == 0:
        raise CaffeliteError("GPU mode: CuPy finds no CUDA device")
    return cupy


def use_device(module):
    """Make ``module`` (CuPy, or caffelite.fake_device) the device; return the previous one."""
    global _device
    previous, _device = _device, module
    return previous


def device():
    """The device's array module, or None before GPU mode was first asked for."""
    return _device


def set_device(device_id: int) -> None:
    """Choose the GPU (Caffe's ``set_device``); the device module's own selection, if any."""
    global _device_id
    _device_id = int(device_id)
    if _device is not None and hasattr(_device, "cuda"):
        _device.cuda.Device(_device_id).use()


def device_id() -> int:
    return _device_id


def device_count() -> int:
    """How many devices GPU mode can use (1 for a device module without CUDA)."""
    if _device is not None and hasattr(_device, "cuda"):
        return int(_device.cuda.runtime.getDeviceCount())
    return 1 if _device is not None else 0


def device_properties(device_id: int) -> list[tuple[str, object]]:
    """Caffe's device_query lines for ``device_id``: (name, value) pairs."""
    if _device is None or not hasattr(_device, "cuda"):
        return [("Device id", device_id), ("Name", getattr(_device, "__name__", "none"))]
    props = _device.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return [
        ("Device id", device_id),
        ("Major revision number", props["major"]),
        ("Minor revision number", props["minor"]),
        ("Name", name.decode() if isinstance(name, bytes) else name),
        ("Total global memory", props["totalGlobalMem"]),
        ("Total shared memory per block", props["sharedMemPerBlock"]),
        ("Total registers per block", props["regsPerBlock"]),
        ("Warp size", props["warpSize"]),
        ("Maximum threads per block", props["maxThreadsPerBlock"]),
        ("Clock rate", props.get("clockRate", "n/a")),
        ("Number of multiprocessors", props["multiProcessorCount"]),
        ("CuPy", _device.__version__),
    ]


def default_dtype() -> numpy.dtype:
    """The float type new blobs get: float32, or float64 inside ``precision``."""
    return _default_dtype


@contextlib.contextmanager
def precision(dtype) -> Iterator[None]:
    """Temporarily create blobs in ``dtype`` (float64 for tight gradient checks)."""
    global _default_dtype
    previous = _default_dtype
    _default_dtype = numpy.dtype(dtype)
    try:
        yield
    finally:
        _default_dtype = previous


@contextlib.contextmanager
def gpu_mode_on(module) -> Iterator[None]:
    """GPU mode on ``module`` for a while (tests: the fake device), then back as it was."""
    global _gpu_mode
    previous_device, previous_mode = use_device(module), _gpu_mode
    _gpu_mode = True
    try:
        yield
    finally:
        use_device(previous_device)
        _gpu_mode = previous_mode
