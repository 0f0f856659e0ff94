"""Winograd's minimal filtering F(4x4, 3x3): 3x3 stride-1 convolution with fewer products.

Lavin and Gray ("Fast Algorithms for Convolutional Neural Networks", 2015): cut the
output into 4x4 tiles, each computed from a 6x6 input tile ``d`` as

    Y = A^T [ sum over channels c of  U[k, c] * V[c] ] A,   U = G g G^T,  V = B^T d B

with ``*`` elementwise over the 36 entries. For every entry the sum over channels is
a matrix product, so a layer becomes 36 GEMMs of ``(K x C) @ (C x tiles)``: 36
multiply-adds per channel pair for 16 outputs, where im2col's one GEMM takes 144, and
the transformed input is 2.25 times the image where im2col's columns are 9 times it.

The input and output transforms are kernels (:func:`caffelite.kernels.winograd_input`,
:func:`~caffelite.kernels.winograd_output`); the filter transform is one small GEMM,
redone at each forward because a weight array can change at any time (a solver step,
or a user writing ``net.params``).

Rounding: the transforms' factors (4, 8, 1/24) amplify float32 rounding: outputs differ
from im2col's by about 1e-6 of the output's scale, where the two im2col layouts differ
by about 1e-7. In float64 the difference is about 1e-14. Only Convolution's forward
uses it, where :func:`applies` says it pays; backward stays im2col, and a layer with
``engine: CAFFE`` always computes Caffe's way.
"""

from __future__ import annotations

import numpy

from caffelite import backend, kernels
from caffelite.im2col import Geometry, Workspace

#: Lavin and Gray's F(4, 3) filter matrix G (6 x 3), interpolation points 0, +-1, +-2.
FILTER_MATRIX = numpy.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)

#: ``U = G g G^T`` for all 9 filter taps at once: entry ``(6 r + c, 3 i + j)`` is
#: ``G[r, i] * G[c, j]``.
_FILTER_TRANSFORM = numpy.kron(FILTER_MATRIX, FILTER_MATRIX)

#: Smallest input and output channels per group that pay for the transforms, and
#: smallest number of tiles (over the batch): below it the 36 GEMMs are too thin and
#: the filter transform is paid for too few outputs (measured on 2 threads at batch 1
#: to 8; see :func:`applies`).
MIN_CHANNELS = 16
MIN_TILES = 32


def tiles(out_dims: tuple[int, int]) -> tuple[int, int]:
    """Tile rows and columns covering an ``(OH, OW)`` output (the last may overhang)."""
    return (out_dims[0] + 3) // 4, (out_dims[1] + 3) // 4


def applies(
    geometry: Geometry, channels_in: int, channels_out: int, out_dims: tuple[int, ...], num: int
) -> bool:
    """Whether a convolution (per-group channel counts, ``num`` images) runs faster this way.

    Only 2-D 3x3 windows at stride 1 without dilation qualify. With fewer than
    :data:`MIN_CHANNELS` channels on either side the 36 GEMMs are too thin to beat
    one im2col GEMM (VGG-16's conv1_1 has 3 input channels: 1.0x). Under
    :data:`MIN_TILES` tiles im2col wins too: a 512-channel layer at 14x14 (16 tiles
    per image) takes 17.2 ms this way and 12.5 ms by im2col at batch 1, 23.1 and
    28.6 ms at batch 2; at 7x7 and batch 8 (32 tiles) the two are even.
    """
    g = geometry
    if not (g.kernel == (3, 3) and g.stride == (1, 1) and g.dilation == (1, 1)):
        return False
    if len(out_dims) != 2 or min(channels_in, channels_out) < MIN_CHANNELS:
        return False
    th, tw = tiles(out_dims)
    return num * th * tw >= MIN_TILES


def per_image_elements(channels: int, num_output: int, out_dims: tuple[int, int]) -> int:
    """The larger of one image's transformed input and product (for batch chunking)."""
    th, tw = tiles(out_dims)
    return 36 * max(channels, num_output) * th * tw


def filter_transform(weights, out) -> None:
    """``out`` ``(36, K, C)`` = ``G g G^T`` of each 3x3 filter of ``weights`` ``(K, C, 3, 3)``."""
    xp = backend.get_array_module(weights)
    k, c = weights.shape[:2]
    transform = xp.asarray(_FILTER_TRANSFORM, dtype=weights.dtype)
    xp.matmul(transform, weights.reshape(k * c, 9).T, out=out.reshape(36, k * c))


def transformed_filters(weights, workspace: Workspace):
    """:func:`filter_transform` of ``weights`` ``(K, C / group, 3, 3)`` into the shared
    scratch buffer "winograd_filters": valid until the next layer runs, so a layer
    transforms its filters once per forward and convolves every chunk of its batch."""
    k, c = weights.shape[:2]
    filters = workspace.scratch("winograd_filters", (36, k, c), weights.dtype)
    filter_transform(weights, filters)
    return filters


def convolve(
    x, filters, y, pad: tuple[int, int], group: int, workspace: Workspace, epilogue=(None, None)
):
    """``y`` ``(n, K, OH, OW)`` = the 3x3 stride-1 convolution of ``x`` ``(n, C, H, W)``
    with the filters ``(36, K, C / group)`` of :func:`transformed_filters`, then
    ``epilogue``: the arguments of
    :func:`caffelite.kernels.winograd_output` after ``y``, ``(scale, shift[, relu,
    negative_slope])`` (a bias alone is ``(None, bias)``).

    The transformed input and the product live in the shared scratch buffers that
    im2col's columns and GEMM products use, which are never live at the same time.
    """
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    k = filters.shape[1]
    th, tw = tiles(y.shape[2:])
    count = n * th * tw
    dtype = x.dtype
    transformed = workspace.scratch("columns", (36, c, count), dtype)
    kernels.winograd_input(x, transformed, pad, (th, tw))
    product = workspace.scratch("gemm_out", (36, k, count), dtype)
    xp.matmul(
        filters.reshape(36, group, k // group, c // group),
        transformed.reshape(36, group, c // group, count),
        out=product.reshape(36, group, k // group, count),
    )
    kernels.winograd_output(product, y, *epilogue)
