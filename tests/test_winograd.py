"""Winograd F(4x4, 3x3): against a direct sum, and inside Convolution against Caffe's way."""

import numpy as np
import pytest

from caffelite import winograd
from caffelite.im2col import Geometry, Workspace
from caffelite.layer import TEST, TRAIN
from caffelite.testing import build_layer, check_layer


def direct_sum(x, w, b=None, pad=(0, 0), group=1):
    """The 3x3 stride-1 convolution, one filter tap at a time, in float64."""
    n, c, h, width = x.shape
    k = w.shape[0]
    padded = np.zeros((n, c, h + 2 * pad[0], width + 2 * pad[1]))
    padded[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + width] = x
    oh, ow = padded.shape[2] - 2, padded.shape[3] - 2
    y = np.zeros((n, k, oh, ow))
    cg, kg = c // group, k // group
    for g in range(group):
        inputs, filters = padded[:, g * cg : (g + 1) * cg], w[g * kg : (g + 1) * kg]
        for a in range(3):
            for bb in range(3):
                window = inputs[:, :, a : a + oh, bb : bb + ow]
                y[:, g * kg : (g + 1) * kg] += np.einsum(
                    "kc,ncij->nkij", filters[:, :, a, bb], window
                )
    if b is not None:
        y += b[None, :, None, None]
    return y


# (n, C, K, H, W, pad, group): sizes that are and are not multiples of the 4x4 tile
SHAPES = {
    "tiles_fit": (2, 3, 4, 10, 6, (0, 0), 1),
    "last_tiles_overhang": (1, 2, 3, 9, 11, (1, 1), 1),
    "pad_2_rectangular": (2, 3, 2, 5, 7, (2, 1), 1),
    "one_tile_cropped": (3, 2, 2, 4, 5, (0, 0), 1),
    "groups": (2, 4, 6, 7, 8, (1, 1), 2),
}


def random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SHAPES)
def test_convolve_matches_the_direct_sum(case, dtype, with_bias):
    n, c, k, h, w, pad, group = SHAPES[case]
    x = random((n, c, h, w), dtype, 1)
    weights = random((k, c // group, 3, 3), dtype, 2)
    bias = random((k,), dtype, 3) if with_bias else None
    expected = direct_sum(x, weights, bias, pad, group)
    y = np.full(expected.shape, np.nan, dtype)
    workspace = Workspace()
    filters = winograd.transformed_filters(weights, workspace)
    winograd.convolve(x, filters, y, pad, group, workspace, (None, bias))
    # float32: the transforms' factors amplify rounding (see caffelite.winograd)
    scale = np.abs(expected).max()
    tolerance = 1e-5 * scale if dtype == np.float32 else 1e-13 * scale
    np.testing.assert_allclose(y, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("negative_slope", [0.0, 0.1], ids=["relu", "leaky"])
def test_convolve_applies_a_folded_epilogue(negative_slope):
    """``relu(y * scale + shift)`` in the output transform, as the folded pass would."""
    n, c, k, h, w, pad, group = SHAPES["last_tiles_overhang"]
    x = random((n, c, h, w), np.float64, 1)
    weights = random((k, c, 3, 3), np.float64, 2)
    scale, shift = random((k,), np.float64, 3), random((k,), np.float64, 4)
    expected = direct_sum(x, weights, None, pad) * scale[:, None, None] + shift[:, None, None]
    expected = np.where(expected < 0, expected * negative_slope, expected)
    y = np.full(expected.shape, np.nan)
    workspace = Workspace()
    filters = winograd.transformed_filters(weights, workspace)
    winograd.convolve(x, filters, y, pad, 1, workspace, (scale, shift, True, negative_slope))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    assert (y < 0).any() == (negative_slope > 0) and (y == 0).any() == (negative_slope == 0)


def test_filter_transform_is_g_g_gt():
    weights = random((3, 2, 3, 3), np.float64, 4)
    out = np.empty((36, 3, 2))
    winograd.filter_transform(weights, out)
    g = winograd.FILTER_MATRIX
    expected = np.einsum("ri,kcij,sj->rskc", g, weights, g).reshape(36, 3, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("geometry", "channels", "out_dims", "num", "expected"),
    [
        (Geometry((3, 3), pad=(1, 1)), (64, 64), (56, 56), 1, True),
        (Geometry((3, 3)), (16, 32), (8, 16), 4, True),  # 32 tiles
        (Geometry((3, 3)), (16, 32), (8, 16), 3, False),  # 24 tiles
        (Geometry((3, 3)), (512, 512), (14, 14), 1, False),  # 16 tiles
        (Geometry((3, 3)), (512, 512), (7, 7), 8, True),
        (Geometry((3, 3), stride=(2, 2)), (64, 64), (28, 28), 8, False),
        (Geometry((3, 3), dilation=(2, 2)), (64, 64), (28, 28), 8, False),
        (Geometry((5, 5)), (64, 64), (28, 28), 8, False),
        (Geometry((3, 3)), (3, 64), (224, 224), 8, False),  # VGG-16's conv1_1
        (Geometry((3, 3)), (64, 8), (28, 28), 8, False),
        (Geometry((3, 3, 3)), (64, 64), (8, 8, 8), 8, False),
    ],
)
def test_applies_to_wide_3x3_stride_1_layers_only(geometry, channels, out_dims, num, expected):
    assert winograd.applies(geometry, *channels, out_dims, num) is expected


# ---- inside Convolution ------------------------------------------------------------------
FILLERS = 'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" }'


def conv_text(body: str, engine: str = "DEFAULT") -> str:
    return f'type: "Convolution" convolution_param {{ {body} engine: {engine} {FILLERS} }}'


WIDE = "num_output: 16 kernel_size: 3 pad: 1"


def test_convolution_chooses_winograd_unless_engine_caffe():
    x = random((4, 16, 9, 9), np.float64, 5)  # 36 tiles
    fast, _, _ = build_layer(conv_text(WIDE), [x], phase=TEST)
    caffe_way, _, _ = build_layer(conv_text(WIDE, "CAFFE"), [x], phase=TEST)
    narrow, _, _ = build_layer(conv_text("num_output: 8 kernel_size: 3 pad: 1"), [x], phase=TEST)
    assert fast.winograd and not caffe_way.winograd and not narrow.winograd


@pytest.mark.parametrize("body", [WIDE, "num_output: 32 kernel_size: 3 group: 2"])
def test_winograd_forward_and_im2col_backward_agree_with_engine_caffe(body):
    """Same weights, TEST phase: the forward to rounding, every gradient bit for bit
    (a backward called anyway is im2col in both)."""
    x = random((6, 32, 14, 9), np.float32, 6)  # 72 and 36 tiles
    fast, fast_bottom, fast_top = build_layer(conv_text(body), [x], phase=TEST)
    caffe_way, bottom, top = build_layer(conv_text(body, "CAFFE"), [x], phase=TEST)
    for mine, theirs in zip(fast.blobs, caffe_way.blobs, strict=True):
        mine.data[...] = theirs.data
    assert fast.winograd
    for layer, bottoms, tops in ((fast, fast_bottom, fast_top), (caffe_way, bottom, top)):
        layer.forward(bottoms, tops)
        tops[0].diff[...] = random(tops[0].shape, np.float32, 7)
        layer.backward(tops, [True], bottoms)
    scale = np.abs(top[0].data).max()
    assert not np.array_equal(fast_top[0].data, top[0].data)  # two algorithms ran
    np.testing.assert_allclose(fast_top[0].data, top[0].data, rtol=0, atol=1e-5 * scale)
    np.testing.assert_array_equal(fast_bottom[0].diff, bottom[0].diff)
    for mine, theirs in zip(fast.blobs, caffe_way.blobs, strict=True):
        np.testing.assert_array_equal(mine.diff, theirs.diff)


def test_winograd_convolution_gradients_in_float64(monkeypatch):
    """The shared checker through the Winograd forward: reference, finite differences
    (on a shape small enough for them, so any number of tiles qualifies)."""
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    layer, _, _ = check_layer(
        conv_text("num_output: 16 kernel_size: 3 pad: 1"),
        [random((2, 16, 5, 6), np.float64, 8)],
        reference=lambda x, w, b: direct_sum(x, w, b, (1, 1)),
        phase=TEST,
    )
    assert layer.winograd and not layer.backward_follows


def test_training_forward_stays_im2col():
    """Where a backward follows, the forward unfolds the input for it: bit for bit
    engine CAFFE's forward."""
    x = random((4, 16, 9, 9), np.float32, 9)
    fast, fast_bottom, fast_top = build_layer(conv_text(WIDE), [x], phase=TRAIN)
    caffe_way, bottom, top = build_layer(conv_text(WIDE, "CAFFE"), [x], phase=TRAIN)
    fast.blobs[0].data[...] = caffe_way.blobs[0].data
    fast.blobs[1].data[...] = caffe_way.blobs[1].data
    fast.forward(fast_bottom, fast_top)
    caffe_way.forward(bottom, top)
    assert fast.winograd and fast.backward_follows
    np.testing.assert_array_equal(fast_top[0].data, top[0].data)
