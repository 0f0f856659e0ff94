"""The N-d im2col / col2im kernels against a plain loop, in both layouts; adjointness;
the N-d kernels agree with the 2-D ones (Caffe's force_nd_im2col)."""

import itertools

import numpy as np
import pytest

from caffelite import im2col
from caffelite.im2col import BATCH_FIRST, BATCH_LAST, Geometry

LAYOUTS = [BATCH_FIRST, BATCH_LAST]

#: (geometry, spatial shape of the input)
CASES = [
    (Geometry((3,)), (7,)),
    (Geometry((3,), stride=(2,), pad=(1,), dilation=(2,)), (9,)),
    (Geometry((1,)), (4,)),
    (Geometry((3, 3, 3), pad=(1, 1, 1)), (4, 5, 6)),
    (Geometry((2, 3, 1), stride=(2, 1, 3), pad=(1, 0, 2), dilation=(1, 2, 1)), (5, 6, 7)),
    (Geometry((3, 3, 3), stride=(1, 2, 2), pad=(2, 0, 3)), (3, 5, 4)),  # rows in the padding
    (Geometry((2, 2, 2, 2), stride=(1, 2, 1, 2), pad=(1, 1, 0, 0)), (3, 4, 3, 4)),
    (Geometry((3, 2), stride=(2, 1), pad=(1, 0), dilation=(1, 2)), (5, 6)),
]
IDS = [f"{len(shape)}d-{i}" for i, (_, shape) in enumerate(CASES)]


def columns_by_loops(x, geometry):
    """col[n, c, *cell, *out] = the padded input under that window cell, by loops."""
    n, c, *spatial = x.shape
    out = geometry.output_shape(*spatial)
    col = np.zeros((n, c, *geometry.kernel, *out))
    g = geometry
    for cell in itertools.product(*map(range, g.kernel)):
        for where in itertools.product(*map(range, out)):
            position = tuple(
                o * s - p + k * d
                for o, s, p, k, d in zip(where, g.stride, g.pad, cell, g.dilation, strict=True)
            )
            if all(0 <= q < size for q, size in zip(position, spatial, strict=True)):
                col[(slice(None), slice(None), *cell, *where)] = x[(..., *position)]
    return col


def run_im2col(x, geometry, layout, force_nd=True):
    n, c, *spatial = x.shape
    out = geometry.output_shape(*spatial)
    col = np.full(im2col.col_shape(layout, n, c, out, geometry), np.nan, x.dtype)  # overwritten
    im2col.im2col(x, layout, geometry, col, force_nd)
    return col


def to_batch_first(col, layout):
    return col if layout == BATCH_FIRST else np.moveaxis(col, -1, 0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry, spatial", CASES, ids=IDS)
def test_im2col_nd_matches_loops(layout, geometry, spatial):
    x = np.random.default_rng(0).standard_normal((2, 3, *spatial))
    col = run_im2col(x, geometry, layout)
    np.testing.assert_array_equal(to_batch_first(col, layout), columns_by_loops(x, geometry))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry, spatial", CASES, ids=IDS)
def test_col2im_nd_is_the_adjoint_of_im2col_nd(layout, geometry, spatial):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: exactly what backward needs."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, *spatial))
    col = run_im2col(x, geometry, layout)
    c = rng.standard_normal(col.shape)
    dx = np.full(x.shape, np.nan)  # col2im must overwrite, not accumulate
    im2col.col2im(c, layout, geometry, dx, force_nd=True)
    assert np.vdot(col, c) == pytest.approx(np.vdot(x, dx), rel=1e-12)


def test_col2im_nd_sums_overlapping_windows():
    # 3-wide windows, stride 1, on a 5-long signal: the middle sample is in 3 windows.
    geometry = Geometry((3,))
    col = np.ones(im2col.col_shape(BATCH_FIRST, 1, 1, (3,), geometry))
    dx = np.empty((1, 1, 5))
    im2col.col2im(col, BATCH_FIRST, geometry, dx)
    np.testing.assert_array_equal(dx[0, 0], [1, 2, 3, 2, 1])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nd_kernels_agree_with_the_2d_kernels(layout):
    """force_nd_im2col changes the code path, never the numbers."""
    geometry = Geometry((3, 2), stride=(2, 1), pad=(1, 1), dilation=(1, 2))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    nd, plain = run_im2col(x, geometry, layout), run_im2col(x, geometry, layout, False)
    np.testing.assert_array_equal(nd, plain)
    c = rng.standard_normal(nd.shape).astype(np.float32)
    dx_nd, dx_plain = np.empty_like(x), np.empty_like(x)
    im2col.col2im(c, layout, geometry, dx_nd, force_nd=True)
    im2col.col2im(c, layout, geometry, dx_plain)
    np.testing.assert_allclose(dx_nd, dx_plain, rtol=1e-6, atol=1e-6)


def test_geometry_defaults_and_checks():
    g = Geometry((3, 3, 3))
    assert (g.stride, g.pad, g.dilation) == ((1, 1, 1), (0, 0, 0), (1, 1, 1))
    assert g.output_shape(8, 28, 28) == (6, 26, 26)
    assert Geometry((3, 3, 3), pad=(1, 1, 1)).output_shape(8, 28, 28) == (8, 28, 28)
    assert Geometry((1, 1, 1)).is_pointwise and not Geometry((1, 1, 1), pad=(0, 1, 0)).is_pointwise
    with pytest.raises(ValueError, match="one value per kernel axis"):
        Geometry((3, 3, 3), stride=(1, 1))
