"""The one place that chooses the array module and the default float type.

Layers never import numpy for array math directly; they ask for ``xp()`` (or
``get_array_module(array)``) so that a GPU module with numpy's API (CuPy) can be
plugged in here later without touching layer code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy

_array_module = numpy
_default_dtype = numpy.dtype(numpy.float32)


def xp():
    """The array module in use (numpy on the CPU)."""
    return _array_module


def get_array_module(*arrays):
    """The module that owns ``arrays`` (numpy for numpy arrays), Chainer-style."""
    for array in arrays:
        module = type(array).__module__
        if module.startswith("cupy"):
            import cupy

            return cupy
    return numpy


def to_numpy(array) -> numpy.ndarray:
    """A host copy of ``array`` for I/O (serialisation, printing)."""
    if hasattr(array, "get"):
        return array.get()
    return numpy.asarray(array)


def set_mode_cpu() -> None:
    global _array_module
    _array_module = numpy


def set_mode_gpu() -> None:
    """GPU mode is designed for (CuPy behind ``xp()``) but not built yet: say so plainly
    rather than fail somewhere inside a layer."""
    from caffelite.errors import CaffeliteError

    raise CaffeliteError(
        "GPU mode is not available in this version of caffelite; use set_mode_cpu() "
        "(solver_mode: GPU in a solver prototxt runs on the CPU with a warning)"
    )


def set_device(device_id: int) -> None:
    if _array_module is not numpy:
        _array_module.cuda.Device(device_id).use()


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
