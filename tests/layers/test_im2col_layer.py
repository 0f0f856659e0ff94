"""Im2col: top shape and values against a loop, gradients (col2im), 1-D/2-D/3-D,
force_nd_im2col, the channel axis, the link to Convolution, and Caffe's errors."""

import itertools

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def im2col_text(body: str) -> str:
    return f'type: "Im2col" convolution_param {{ {body} }}'


def per_axis(value, axes, default):
    if value is None:
        return (default,) * axes
    return tuple(value) if isinstance(value, tuple) else (value,) * axes


def im2col_reference(x, kernel, stride=None, pad=None, dilation=None):
    """top[n, (c, *cell) row-major, *out] = the padded input under that window cell."""
    n, c, *spatial = x.shape
    axes = len(spatial)
    kernel = per_axis(kernel, axes, None)
    stride, pad = per_axis(stride, axes, 1), per_axis(pad, axes, 0)
    dilation = per_axis(dilation, axes, 1)
    out = [
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, p, d, k, st in zip(spatial, pad, dilation, kernel, stride, strict=True)
    ]
    cells = list(itertools.product(*map(range, kernel)))
    top = np.zeros((n, c * len(cells), *out))
    for ch in range(c):
        for index, cell in enumerate(cells):
            for where in itertools.product(*map(range, out)):
                position = tuple(
                    o * st - p + k * d
                    for o, st, p, k, d in zip(where, stride, pad, cell, dilation, strict=True)
                )
                if all(0 <= q < size for q, size in zip(position, spatial, strict=True)):
                    top[(slice(None), ch * len(cells) + index, *where)] = x[
                        (slice(None), ch, *position)
                    ]
    return top


def random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


CASES = {
    "2d": ("kernel_size: 3", (2, 3, 5, 4), dict(kernel=3)),
    "2d_pad_stride": (
        "kernel_size: 3 pad: 1 stride: 2",
        (2, 2, 6, 5),
        dict(kernel=3, pad=1, stride=2),
    ),
    "2d_hw_dilation": (
        "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 dilation: 2",
        (1, 2, 5, 7),
        dict(kernel=(2, 3), pad=(1, 0), stride=(1, 2), dilation=2),
    ),
    "2d_force_nd": (
        "kernel_size: 2 kernel_size: 3 pad: 1 force_nd_im2col: true",
        (2, 2, 4, 5),
        dict(kernel=(2, 3), pad=1),
    ),
    "1d": ("kernel_size: 3 stride: 2 pad: 1", (2, 3, 8), dict(kernel=3, stride=2, pad=1)),
    "3d": ("kernel_size: 2 pad: 1 stride: 2", (2, 2, 3, 4, 3), dict(kernel=2, pad=1, stride=2)),
    "3d_per_axis": (
        "kernel_size: 1 kernel_size: 2 kernel_size: 3 dilation: 1 dilation: 2 dilation: 1",
        (1, 2, 2, 4, 4),
        dict(kernel=(1, 2, 3), dilation=(1, 2, 1)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_im2col_forward_and_gradient(name):
    body, shape, options = CASES[name]
    layer, _, top = check_layer(
        im2col_text(body), [random(*shape)], reference=lambda x: im2col_reference(x, **options)
    )
    assert layer.force_nd == ("force_nd_im2col" in body)


def test_top_shape_is_channels_times_kernel_by_output():
    _, _, top = build_layer(im2col_text("kernel_size: 3 pad: 1"), [random(2, 4, 8, 6, 6)])
    assert top[0].shape == (2, 4 * 27, 8, 6, 6)
    _, _, top = build_layer(im2col_text("kernel_h: 3 kernel_w: 2 stride: 2"), [random(3, 5, 7, 6)])
    assert top[0].shape == (3, 5 * 6, 3, 3)


def test_channel_axis_2_treats_leading_axes_as_batch():
    x = random(2, 3, 2, 5, 4)

    def reference(x):
        return im2col_reference(x.reshape(6, 2, 5, 4), kernel=3, pad=1).reshape(2, 3, 18, 5, 4)

    check_layer(im2col_text("kernel_size: 3 pad: 1 axis: 2"), [x], reference=reference)


def test_convolution_is_a_product_with_the_im2col_top():
    """Convolution == W (O x C*prod(k)) times Im2col's top, image by image (Caffe's view)."""
    x = random(2, 3, 4, 5, 5, seed=3)
    body = "kernel_size: 3 pad: 1 stride: 2"
    conv, cb, ct = build_layer(
        f'type: "Convolution" convolution_param {{ num_output: 4 bias_term: false {body} '
        'weight_filler { type: "gaussian" } }',
        [x],
    )
    columns, ib, it = build_layer(im2col_text(body), [x])
    conv.forward(cb, ct)
    columns.forward(ib, it)
    weights = conv.blobs[0].data.reshape(4, -1)
    product = np.einsum("ok,nk...->no...", weights, it[0].data)
    np.testing.assert_allclose(ct[0].data, product, rtol=1e-12, atol=1e-12)


def test_no_gradient_leaves_the_bottom_diff_alone():
    layer, bottom, top = build_layer(im2col_text("kernel_size: 2"), [random(1, 2, 3, 3)])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 7.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)


@pytest.mark.parametrize(
    "body, shape, pattern",
    [
        (
            "kernel_size: 1 axis: -1",
            (2, 3),
            r"needs at least one spatial axis after the channel axis: bottom of shape \(2, 3\) "
            r"with channel axis 1",
        ),
        (
            "kernel_size: 3 kernel_size: 3",
            (1, 2, 4, 4, 4),
            "kernel_size specified 2 times; 3 spatial",
        ),
        ("kernel_h: 3 kernel_w: 3", (1, 2, 9), "kernel_h/kernel_w can only be used for 2-D"),
        ("", (1, 2, 4, 4), "kernel_size must be specified once.*specified 0 times"),
        ("kernel_size: 3 stride: 0", (1, 2, 4, 4), r"stride must be positive, got \(0, 0\)"),
        (
            "kernel_size: 4 dilation: 2",
            (1, 2, 6, 9),
            r"kernel extent 7 along h is larger than the padded input \(6 \+ 2\*0\)",
        ),
    ],
)
def test_bad_geometry(body, shape, pattern):
    with pytest.raises(CaffeliteError, match=pattern) as info:
        build_layer(im2col_text(body), [random(*shape)])
    assert "layer 'im2col' (type Im2col)" in str(info.value)


def test_in_place_is_refused():
    layer, bottom, _ = build_layer(im2col_text("kernel_size: 1"), [random(1, 2, 3, 3)])
    with pytest.raises(CaffeliteError, match="does not allow in-place"):
        layer.reshape(bottom, bottom)


def test_top_over_the_memory_limit_is_refused():
    """Caffelite's size limits hold for the columns blob as for any top (caffelite.limits)."""
    from caffelite import limits
    from caffelite.layer import TEST
    from caffelite.net import Net
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import parse_text

    text = (
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 16 dim: 16 dim: 16 dim: 16 } } } "
        'layer { name: "cols" type: "Im2col" bottom: "data" top: "cols" '
        "convolution_param { kernel_size: 3 pad: 1 } }"
    )
    with limits.memory_limit("1M"):
        with pytest.raises(
            CaffeliteError,
            match=r"layer 'cols' \(type Im2col\): top blob 'cols' of shape "
            r"\(1, 432, 16, 16, 16\)",
        ):
            Net(parse_text(text, caffe_pb2.NetParameter()), TEST)
