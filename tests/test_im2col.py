"""im2col / col2im against a plain loop, in both layouts; adjointness; chunking; scratch."""

import numpy as np
import pytest

from caffelite import im2col
from caffelite.im2col import BATCH_FIRST, BATCH_LAST, Geometry, Workspace

LAYOUTS = [BATCH_FIRST, BATCH_LAST]

GEOMETRIES = [
    Geometry((3, 3)),
    Geometry((3, 3), stride=(2, 2), pad=(1, 1)),
    Geometry((3, 2), stride=(2, 1), pad=(1, 0)),
    Geometry((2, 3), stride=(1, 2), pad=(2, 1), dilation=(2, 1)),
    Geometry((1, 1)),
]


def columns_by_loops(x, geometry):
    """col[n, c, i, j, y, x] = padded input at the window's (i, j) element, by loops."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        geometry.kernel,
        geometry.stride,
        geometry.pad,
        geometry.dilation,
    )
    oh, ow = geometry.output_shape(h, w)
    col = np.zeros((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            for y in range(oh):
                for z in range(ow):
                    row = y * sh - ph + i * dh
                    column = z * sw - pw + j * dw
                    if 0 <= row < h and 0 <= column < w:
                        col[:, :, i, j, y, z] = x[:, :, row, column]
    return col


def run_im2col(x, geometry, layout):
    n, c, h, w = x.shape
    out_hw = geometry.output_shape(h, w)
    col = np.full(im2col.col_shape(layout, n, c, out_hw, geometry), np.nan, x.dtype)  # overwritten
    im2col.im2col(x, layout, geometry, col)
    return col


def to_batch_first(col, layout):
    return col if layout == BATCH_FIRST else col.transpose(5, 0, 1, 2, 3, 4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_im2col_matches_loops(layout, geometry):
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 5))
    col = run_im2col(x, geometry, layout)
    np.testing.assert_array_equal(to_batch_first(col, layout), columns_by_loops(x, geometry))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padding_stays_zero_across_calls(layout):
    geometry = Geometry((3, 3), pad=(1, 1))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 4, 4))
    col = run_im2col(x, geometry, layout)
    second = rng.standard_normal(x.shape)
    im2col.im2col(second, layout, geometry, col)
    np.testing.assert_array_equal(to_batch_first(col, layout), columns_by_loops(second, geometry))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_columns_are_exact_copies(layout):
    geometry = Geometry((3, 2), stride=(2, 1), pad=(1, 0))
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 5)).astype(np.float32)
    col = run_im2col(x, geometry, layout)
    assert col.dtype == np.float32
    expected = columns_by_loops(x.astype(np.float64), geometry)
    np.testing.assert_array_equal(to_batch_first(col, layout), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_col2im_is_the_adjoint_of_im2col(layout, geometry):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: exactly what backward needs."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 6))
    col = run_im2col(x, geometry, layout)
    c = rng.standard_normal(col.shape)
    dx = np.full(x.shape, np.nan)  # col2im must overwrite, not accumulate
    im2col.col2im(c, layout, geometry, dx)
    assert np.vdot(col, c) == pytest.approx(np.vdot(x, dx), rel=1e-12)


def test_col2im_sums_overlapping_windows():
    # 3x3 windows, stride 1, on a 4x4 image: the centre pixels are in 4 windows.
    geometry = Geometry((3, 3))
    col = np.ones(im2col.col_shape(BATCH_FIRST, 1, 1, (2, 2), geometry))
    dx = np.empty((1, 1, 4, 4))
    im2col.col2im(col, BATCH_FIRST, geometry, dx)
    expected = [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_output_sizes_follow_caffe():
    assert im2col.conv_output_size(28, 5, 1, 0) == 24  # LeNet conv1
    assert im2col.conv_output_size(12, 5, 1, 0) == 8  # LeNet conv2
    assert im2col.conv_output_size(227, 11, 4, 0) == 55  # AlexNet conv1
    assert im2col.conv_output_size(7, 3, 2, 1) == 4
    assert im2col.conv_output_size(8, 3, 2, 1) == 4  # floor
    assert im2col.conv_output_size(9, 3, 1, 0, dilation=2) == 5
    assert Geometry((3, 2), (2, 1), (1, 0)).output_shape(7, 5) == (4, 4)
    for size in range(1, 9):
        out = im2col.conv_output_size(size + 4, 3, 2, 1, 2)
        assert im2col.deconv_output_size(out, 3, 2, 1, 2) <= size + 4


def test_layout_choice_for_lenet():
    lenet1, lenet2 = Geometry((5, 5)), Geometry((5, 5))
    assert im2col.choose_layout(lenet1, 1 * 25, 24 * 24, 64) == BATCH_FIRST
    assert im2col.choose_layout(lenet2, 20 * 25, 8 * 8, 64) == BATCH_LAST
    assert (
        im2col.choose_layout(lenet2, 20 * 25, 8 * 8, 1) == BATCH_FIRST
    )  # one image: the same array


def test_batch_chunks_cover_the_batch_within_the_limit():
    assert im2col.batch_chunks(64, 1000) == [(0, 64)]
    chunks = im2col.batch_chunks(10, 100, limit=350)
    assert chunks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert im2col.batch_chunks(5, 1000, limit=10) == [(i, i + 1) for i in range(5)]
    assert im2col.batch_chunks(0, 10) == [(0, 0)]


def test_workspace_reuses_memory():
    work = Workspace()
    first = work.array("col", (4, 5), np.float32)
    smaller = work.array("col", (3, 2), np.float32)
    assert np.shares_memory(first, smaller)
    assert smaller.shape == (3, 2) and smaller.flags.c_contiguous
    assert work.array("col", (2, 2), np.float64).dtype == np.float64
    frame = work.constant("frame", (2, 3), np.float32, -np.inf)
    assert np.all(frame == -np.inf)
    frame[0, 0] = 1
    assert work.constant("frame", (2, 3), np.float32, -np.inf) is frame
    work.clear()
    assert work.constant("frame", (2, 3), np.float32, -np.inf) is not frame
