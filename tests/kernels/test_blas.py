"""kernels.matmul_accumulate on the CPU: ``out += a @ b`` through numpy's own BLAS."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import kernels
from caffelite.kernels import blas

SHAPES = [(5, 7, 3), (64, 800, 500), (1, 9, 4), (6, 1, 5), (3, 0, 4)]  # (m, k, n)


def operands(m, k, n, dtype, transpose_a, transpose_b, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    out = rng.standard_normal((m, n)).astype(dtype)
    return (a.T if transpose_a else a), (b.T if transpose_b else b), out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_b", [False, True], ids=["b", "bT"])
@pytest.mark.parametrize("transpose_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_accumulates_the_product(shape, transpose_a, transpose_b, dtype):
    a, b, out = operands(*shape, dtype, transpose_a, transpose_b)
    expected = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    kernels.matmul_accumulate(a, b, out)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_accumulates_again_on_a_second_call():
    a, b, out = operands(4, 6, 3, np.float64, False, True)
    start = out.copy()
    kernels.matmul_accumulate(a, b, out)
    kernels.matmul_accumulate(a, b, out)
    np.testing.assert_allclose(out, start + 2 * (a @ b), rtol=1e-12)


def test_strided_operands_are_read_correctly():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 10))[:, ::2]  # neither C- nor F-contiguous
    b = rng.standard_normal((5, 3))
    out = np.zeros((4, 3))
    kernels.matmul_accumulate(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_other_dtypes_take_matmul_and_add():
    a, b, out = operands(3, 4, 2, np.float16, False, False)
    assert not blas.gemm_accumulate(a, b, out.copy())
    expected = out + a @ b
    kernels.matmul_accumulate(a, b, out)
    np.testing.assert_array_equal(out, expected)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(3, 4\) @ \(5, 2\) into \(3, 2\)"):
        blas.gemm_accumulate(np.ones((3, 4)), np.ones((5, 2)), np.zeros((3, 2)))


def test_numpys_bundled_openblas_is_found():
    """PyPI's numpy wheels carry scipy-openblas: the one-GEMM path must be the one taken."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if not config.get("name", "").startswith("scipy-openblas"):
        pytest.skip(f"numpy is built with {config.get('name')!r}, not the wheels' scipy-openblas")
    assert blas.numpy_cblas() is not None
    a, b, out = operands(8, 16, 4, np.float32, True, False)
    assert blas.gemm_accumulate(a, b, out)
