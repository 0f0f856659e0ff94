"""Pooling: Caffe's output sizes, AVE divisors, MAX first-max rule and mask, gradients."""

import math

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.layers.pooling import pooled_size
from caffelite.testing import build_layer, check_layer


def pool_text(body: str) -> str:
    return f'type: "Pooling" pooling_param {{ {body} }}'


def caffe_reference(x, method, kernel, stride=(1, 1), pad=(0, 0), ceil=True):
    """Caffe's forward loops, transcribed plainly: returns (top, mask)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    top = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for z in range(ow):
                    hs, ws = y * sh - ph, z * sw - pw
                    if method == "MAX":
                        he, we = min(hs + kh, h), min(ws + kw, w)
                        hs, ws = max(hs, 0), max(ws, 0)
                        best = -np.finfo(np.float32).max
                        for r in range(hs, he):
                            for q in range(ws, we):
                                if x[b, ch, r, q] > best:
                                    best = x[b, ch, r, q]
                                    mask[b, ch, y, z] = r * w + q
                        top[b, ch, y, z] = best
                    else:
                        he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                        size = (he - hs) * (we - ws)
                        hs, ws = max(hs, 0), max(ws, 0)
                        he, we = min(he, h), min(we, w)
                        top[b, ch, y, z] = x[b, ch, hs:he, ws:we].sum() / size
    return top, mask


def distinct(*shape, seed=0):
    """Values without ties (a scaled permutation), so MAX has one argmax and a gradient."""
    count = math.prod(shape)
    return np.random.default_rng(seed).permutation(count).reshape(shape) / count - 0.5


# name: (body, shape, kernel, stride, pad)
GEOMETRIES = {
    "tiles_2x2": ("kernel_size: 2 stride: 2", (2, 3, 6, 8), (2, 2), (2, 2), (0, 0)),
    "overlap_3s2_pad1": ("kernel_size: 3 stride: 2 pad: 1", (2, 2, 7, 6), (3, 3), (2, 2), (1, 1)),
    "overlap_3s1": ("kernel_size: 3", (1, 2, 5, 6), (3, 3), (1, 1), (0, 0)),
    "overlap_3s1_pad1": ("kernel_size: 3 pad: 1", (2, 2, 7, 6), (3, 3), (1, 1), (1, 1)),
    "overlap_2s1": ("kernel_size: 2 stride: 1", (1, 2, 5, 6), (2, 2), (1, 1), (0, 0)),
    "tiles_3s3": ("kernel_size: 3 stride: 3", (1, 2, 9, 7), (3, 3), (3, 3), (0, 0)),
    "ceil_overhang": ("kernel_size: 2 stride: 2", (2, 2, 5, 7), (2, 2), (2, 2), (0, 0)),
    "ceil_clip_pad": ("kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5), (2, 2), (2, 2), (1, 1)),
    "rect_hw": (
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        (2, 2, 6, 5),
        (3, 2),
        (2, 1),
        (1, 0),
    ),
    "whole_window": ("kernel_h: 4 kernel_w: 3", (2, 3, 4, 3), (4, 3), (1, 1), (0, 0)),
}


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_pooling_forward_and_gradients(method, name):
    body, shape, kernel, stride, pad = GEOMETRIES[name]

    def reference(x):
        return caffe_reference(x, method, kernel, stride, pad)[0]

    check_layer(pool_text(f"pool: {method} {body}"), [distinct(*shape)], reference=reference)


@pytest.mark.parametrize(
    "name", ["tiles_2x2", "overlap_3s2_pad1", "ceil_clip_pad", "rect_hw", "whole_window"]
)
def test_max_mask_top_is_caffes_flat_argmax(name):
    body, shape, kernel, stride, pad = GEOMETRIES[name]

    def reference(x):
        return list(caffe_reference(x, "MAX", kernel, stride, pad))

    check_layer(
        pool_text(f"pool: MAX {body}"),
        [distinct(*shape, seed=1)],
        reference=reference,
        num_top=2,
        top_indices=[0],
    )


def test_ties_go_to_the_first_maximum():
    """Caffe replaces the max only when strictly greater: the first (row-major) wins."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 5.0  # both in the overlapping centre windows
    for body in ("kernel_size: 3 stride: 1", "kernel_size: 2 stride: 2", "kernel_size: 4"):
        layer, bottom, top = build_layer(pool_text(f"pool: MAX {body}"), [x], num_top=2)
        layer.forward(bottom, top)
        expected_top, expected_mask = caffe_reference(x, "MAX", (layer.kernel), layer.stride)
        np.testing.assert_array_equal(top[0].data, expected_top)
        np.testing.assert_array_equal(top[1].data, expected_mask)
        top[0].diff[...] = 1.0
        layer.backward(top, [True], bottom)
        routed = np.zeros(16)
        np.add.at(routed, expected_mask.ravel().astype(int), 1.0)
        np.testing.assert_array_equal(bottom[0].diff.ravel(), routed)


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("kernel_size: 3 pad: 1", (2, 3, 7, 6)),  # GoogLeNet's inception pools
        ("kernel_size: 3 stride: 2 pad: 1", (1, 3, 8, 7)),
        ("kernel_size: 3 stride: 2", (1, 3, 8, 8)),  # ceil rounding: the last window overhangs
        ("kernel_size: 2 stride: 2 pad: 1", (1, 3, 5, 6)),
        ("kernel_size: 2 stride: 1 pad: 1", (1, 2, 4, 5)),
    ],
)
def test_clipped_windows_keep_the_first_maximum(body, shape):
    """Windows that padding or ceil rounding clip, on values full of ties: maxima and mask
    as Caffe's scan gives them. Without a mask (a TEST forward, whose compiled loop
    clamps the clipped windows' indices instead) the same maxima, NaN included."""
    from caffelite.layer import TEST

    x = np.random.default_rng(3).integers(0, 3, shape).astype(np.float64)
    text = pool_text(f"pool: MAX {body}")
    layer, bottom, top = build_layer(text, [x], num_top=2)
    layer.forward(bottom, top)
    expected_top, expected_mask = caffe_reference(x, "MAX", layer.kernel, layer.stride, layer.pad)
    np.testing.assert_array_equal(top[0].data, expected_top)
    np.testing.assert_array_equal(top[1].data, expected_mask)
    x[0, 0, -1, :2] = x[0, 0, 0, -1] = x[-1, -1, -2, 0] = np.nan
    masked, bottom, top = build_layer(text, [x], num_top=2)
    masked.forward(bottom, top)
    plain, bottom, maxima = build_layer(text, [x], phase=TEST)
    plain.forward(bottom, maxima)
    assert not plain.argmax_valid
    np.testing.assert_array_equal(maxima[0].data, top[0].data)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = distinct(2, 3, 3, 5, seed=2)
    expected = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    layer, _, top = check_layer(
        pool_text(f"pool: {method} global_pooling: true"),
        [x],
        reference=lambda x: expected.reshape(2, 3, 1, 1),
        forward_rtol=1e-12,
    )
    assert layer.kernel == (3, 5) and top[0].shape == (2, 3, 1, 1)


def test_global_max_mask():
    x = distinct(2, 2, 3, 4, seed=3)
    layer, bottom, top = build_layer(pool_text("pool: MAX global_pooling: true"), [x], num_top=2)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[1].data[..., 0, 0], x.reshape(2, 2, -1).argmax(axis=2))


@pytest.mark.parametrize(
    "size, kernel, stride, pad, ceil, expected",
    [
        (24, 2, 2, 0, True, 12),  # LeNet pool1
        (8, 2, 2, 0, True, 4),  # LeNet pool2
        (12, 3, 2, 0, True, 6),  # ceil: the last window hangs over the border
        (12, 3, 2, 0, False, 5),
        (32, 3, 2, 0, True, 16),  # CIFAR-10 quick
        (55, 3, 2, 0, True, 27),  # AlexNet pool1
        (5, 2, 2, 1, True, 3),  # would be 4, but the 4th window starts in the padding
        (6, 3, 2, 1, True, 4),  # not clipped: starts at the last pixel
        (7, 3, 2, 1, False, 4),
        (3, 3, 1, 0, True, 1),
    ],
)
def test_pooled_size_follows_caffe(size, kernel, stride, pad, ceil, expected):
    assert pooled_size(size, kernel, stride, pad, ceil) == expected


def test_caffe_output_shapes():
    for body, shape, expected in [
        ("kernel_size: 3 stride: 2", (1, 1, 12, 12), (1, 1, 6, 6)),
        ("kernel_size: 2 stride: 2", (2, 20, 24, 24), (2, 20, 12, 12)),
        ("kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 1, 12, 12), (1, 1, 5, 5)),
        ("kernel_size: 2 stride: 2 pad: 1", (1, 1, 5, 5), (1, 1, 3, 3)),
        ("kernel_h: 3 kernel_w: 1 stride_h: 3 stride_w: 1", (1, 2, 7, 4), (1, 2, 3, 4)),
    ]:
        _, _, top = build_layer(pool_text(body), [np.zeros(shape)])
        assert top[0].shape == expected, body


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_floor_round_mode(method):
    x = distinct(2, 2, 7, 7, seed=4)
    check_layer(
        pool_text(f"pool: {method} kernel_size: 3 stride: 2 round_mode: FLOOR"),
        [x],
        reference=lambda x: caffe_reference(x, method, (3, 3), (2, 2), ceil=False)[0],
    )


def test_average_divides_by_the_window_clipped_to_the_padded_image():
    # 4x4 image of ones, kernel 3 stride 2 pad 1 (ceil): windows start at rows -1, 1, 3.
    # Divisors count the cells inside the padded image (3, 3, 2 per axis: the last window
    # is clipped at H + pad); the sums count only real pixels (2, 3, 1 per axis).
    _, _, top = check_layer(
        pool_text("pool: AVE kernel_size: 3 stride: 2 pad: 1"),
        [np.ones((1, 1, 4, 4))],
        gradient=False,
    )
    pixels, divisors = np.array([2, 3, 1]), np.array([3, 3, 2])
    expected = np.outer(pixels, pixels) / np.outer(divisors, divisors)
    np.testing.assert_allclose(top[0].data[0, 0], expected, rtol=1e-15)
    assert top[0].data[0, 0, 2, 2] == 0.25


def test_float32_lenet_pooling_keeps_the_dtype():
    x = distinct(4, 20, 24, 24).astype(np.float32)
    layer, bottom, top = build_layer(
        pool_text("pool: MAX kernel_size: 2 stride: 2"), [x], dtype=np.float32
    )
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, x.reshape(4, 20, 12, 2, 12, 2).max(axis=(3, 5)))


def test_no_bottom_gradient_requested():
    layer, bottom, top = build_layer(pool_text("pool: AVE kernel_size: 2"), [distinct(1, 1, 3, 3)])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 3.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 3.0)


# ---- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, pattern",
    [
        ("kernel_size: 3 pad: 3", r"pad_h \(3\) must be smaller than kernel_h \(3\)"),
        ("kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2", r"pad_w \(2\) must be smaller than kernel_w"),
        ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel_size OR kernel_h and kernel_w"),
        ("stride: 2", r"kernel_size \(or both kernel_h and kernel_w\) is required"),
        ("kernel_h: 2", "is required"),
        ("global_pooling: true kernel_size: 2", "kernel size cannot be specified"),
        ("global_pooling: true stride: 2", r"only pad = 0 and stride = 1.*stride \(2, 2\)"),
        ("kernel_size: 2 pad_h: 1", "pad is pad OR pad_h and pad_w"),
        ("kernel_size: 2 stride: 1 stride_h: 1 stride_w: 1", "stride is stride OR"),
        ("kernel_size: 2 stride: 0", "stride must be positive"),
        ("kernel_size: 0", "kernel dimensions must be positive"),
    ],
)
def test_bad_parameters(body, pattern):
    with pytest.raises(CaffeliteError, match=pattern):
        build_layer(pool_text(body), [np.zeros((1, 1, 6, 6))])


def test_mask_top_needs_max():
    with pytest.raises(CaffeliteError, match="only MAX pooling has a second"):
        build_layer(pool_text("pool: AVE kernel_size: 2"), [np.zeros((1, 1, 4, 4))], num_top=2)


def test_needs_four_axes():
    with pytest.raises(CaffeliteError, match=r"4 axes.*got shape \(2, 3, 4\)"):
        build_layer(pool_text("kernel_size: 2"), [np.zeros((2, 3, 4))])


def test_too_many_tops():
    with pytest.raises(CaffeliteError, match="at most 2 top"):
        build_layer(pool_text("kernel_size: 2"), [np.zeros((1, 1, 4, 4))], num_top=3)


def test_kernel_larger_than_input():
    with pytest.raises(CaffeliteError, match=r"empty: input 2x6, kernel 3x3.*give 0x4"):
        build_layer(pool_text("kernel_size: 3 round_mode: FLOOR"), [np.zeros((1, 1, 2, 6))])


@pytest.mark.parametrize(
    "params",
    [
        "kernel_size: 2 stride: 2",
        "kernel_size: 2 stride: 2 pad: 1",
        "kernel_size: 2 stride: 1",
        "kernel_size: 3 stride: 1 pad: 1",
        "kernel_size: 3 stride: 3",
        "kernel_size: 3 stride: 2 pad: 1",
        "kernel_size: 3 stride: 2",
    ],
)
def test_test_phase_max_pooling_skips_the_argmax_but_backward_still_works(params):
    """A TEST-phase forward keeps no argmax; a forced backward finds it and must agree."""
    from caffelite.layer import TEST, TRAIN

    x = np.random.default_rng(9).permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0
    text = f'type: "Pooling" pooling_param {{ pool: MAX {params} }}'
    results = []
    for phase in (TRAIN, TEST):
        layer, bottom, top = build_layer(text, [x], phase=phase)
        layer.forward(bottom, top)
        assert layer.argmax_valid == (phase == TRAIN)
        y = top[0].data.copy()
        top[0].data[...] = -1.0  # the recomputed argmax must not come from the top
        top[0].diff[...] = np.arange(top[0].count).reshape(top[0].shape)
        layer.backward(top, [True], bottom)
        assert layer.argmax_valid
        results.append((layer, y, bottom[0].diff.copy()))
    (_, y_train, dx_train), (test_layer, y_test, dx_test) = results
    np.testing.assert_array_equal(y_test, y_train)
    np.testing.assert_array_equal(dx_test, dx_train)
