"""GEMM with Caffe's ``beta``, ``c += a @ b``, through the BLAS numpy itself uses.

numpy's ``matmul`` has no ``beta``: ``diff += a @ b`` writes a temporary as large as
``diff`` and then reads both and writes ``diff`` again, four passes over memory where
BLAS's ``beta = 1`` needs two (read and write ``c`` once). For an InnerProduct's weight
gradient that matters: CaffeNet's fc6 (4096 x 9216 weights, 151 MB, batch 8) took
52-58 ms as matmul + add and 18-20 ms as one ``sgemm`` with ``beta = 1`` on a 2-vCPU
host, with the same result to the bit.

The library is the one numpy was built with, found from numpy's own build record (the
PyPI wheels bundle ``scipy-openblas``, whose symbols carry a ``scipy_`` prefix and, in
its 64-bit-index build, a ``64_`` suffix), so these GEMMs share numpy's thread pool
and thread settings. Elsewhere any loaded library exporting standard ``cblas_sgemm``
is used (MKL, a system OpenBLAS). :func:`gemm_accumulate` returns False when no such
library is found, and the caller does the matmul and add itself.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class _Cblas:
    """``cblas_sgemm`` and ``cblas_dgemm`` of one library, declared with its index type."""

    def __init__(self, library: ctypes.CDLL, prefix: str, suffix: str, index) -> None:
        self.routines = {}
        for dtype, name, scalar in (
            (np.float32, "sgemm", ctypes.c_float),
            (np.float64, "dgemm", ctypes.c_double),
        ):
            routine = getattr(library, f"{prefix}cblas_{name}{suffix}")
            pointer = ctypes.c_void_p
            routine.argtypes = [ctypes.c_int] * 3 + [index] * 3 + [scalar, pointer, index]
            routine.argtypes += [pointer, index, scalar, pointer, index]
            routine.restype = None
            self.routines[np.dtype(dtype)] = (routine, scalar)


def _library_files(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "*openblas*")))


def _bundled_scipy_openblas(config: dict) -> _Cblas | None:
    """The scipy-openblas that numpy's wheels carry beside numpy."""
    package = os.path.dirname(np.__file__)
    candidates = []
    for directory in (package + ".libs", os.path.join(package, ".dylibs"), package):
        candidates += _library_files(directory)
    wide = "USE64BITINT" in config.get("openblas configuration", "")
    suffix, index = ("64_", ctypes.c_int64) if wide else ("", ctypes.c_int)
    for path in candidates:
        try:
            return _Cblas(ctypes.CDLL(path), "scipy_", suffix, index)
        except (OSError, AttributeError):
            continue
    return None


def _loaded_standard_cblas() -> _Cblas | None:
    """A library already mapped into this process that exports ``cblas_sgemm``."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if ".so" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(p for p in paths if "blas" in p.lower() or "mkl" in p.lower()):
        try:
            return _Cblas(ctypes.CDLL(path), "", "", ctypes.c_int)
        except (OSError, AttributeError):
            continue
    return None


@functools.cache
def numpy_cblas() -> _Cblas | None:
    """numpy's BLAS as CBLAS routines, or None where it cannot be found."""
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        config = {}
    if config.get("name", "").startswith("scipy-openblas"):
        found = _bundled_scipy_openblas(config)
        if found is not None:
            return found
    return _loaded_standard_cblas()


def _operand(matrix: np.ndarray):
    """(transpose flag, leading dimension, array) of a C- or F-contiguous 2-D array."""
    if matrix.flags.c_contiguous:
        return _NO_TRANS, max(1, matrix.shape[1]), matrix
    if matrix.flags.f_contiguous:
        return _TRANS, max(1, matrix.shape[0]), matrix
    return _NO_TRANS, max(1, matrix.shape[1]), np.ascontiguousarray(matrix)


def gemm_accumulate(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out += a @ b`` in one BLAS call; False (nothing done) where that cannot be.

    ``a`` (m, k) and ``b`` (k, n) may be transposed views; ``out`` (m, n) must be
    C-contiguous and share their float32 or float64 dtype.
    """
    cblas = numpy_cblas()
    if cblas is None or not out.flags.c_contiguous or not (a.dtype == b.dtype == out.dtype):
        return False
    routine = cblas.routines.get(out.dtype)
    if routine is None:
        return False
    gemm, scalar = routine
    m, n = out.shape
    k = a.shape[1]
    if a.shape[0] != m or b.shape != (k, n):
        raise ValueError(f"gemm_accumulate: shapes {a.shape} @ {b.shape} into {out.shape}")
    if m == 0 or n == 0:
        return True
    trans_a, lda, a = _operand(a)
    trans_b, ldb, b = _operand(b)
    ldc = max(1, n)
    gemm(
        _ROW_MAJOR, trans_a, trans_b, m, n, k, scalar(1.0), a.ctypes.data, lda,
        b.ctypes.data, ldb, scalar(1.0), out.ctypes.data, ldc,
    )  # fmt: skip
    return True
