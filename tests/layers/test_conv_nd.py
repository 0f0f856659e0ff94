"""Convolution and Deconvolution over 1, 3 and more spatial axes (Caffe's N-d convolution):
forward against direct references, gradients in float64, both column layouts, groups,
bias on and off, force_nd_im2col, Caffe's per-axis parameter rules and their errors."""

import itertools

import numpy as np
import pytest

from caffelite import im2col
from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" }'


def layer_text(kind: str, body: str) -> str:
    return f'type: "{kind}" convolution_param {{ {body} {FILLERS} }}'


def per_axis(value, axes, default):
    if value is None:
        return (default,) * axes
    return tuple(value) if isinstance(value, tuple) else (value,) * axes


def conv_nd_reference(x, w, b=None, stride=None, pad=None, dilation=None, group=1):
    """Sum over kernel cells of a strided slice of the padded input times that cell's
    weights: a different route from im2col's columns."""
    n, c, *spatial = x.shape
    o, cg, *kernel = w.shape
    axes = len(spatial)
    stride, pad = per_axis(stride, axes, 1), per_axis(pad, axes, 0)
    dilation = per_axis(dilation, axes, 1)
    padded = np.zeros((n, c, *(s + 2 * p for s, p in zip(spatial, pad, strict=True))))
    padded[(..., *(slice(p, p + s) for s, p in zip(spatial, pad, strict=True)))] = x
    out = [
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, p, d, k, st in zip(spatial, pad, dilation, kernel, stride, strict=True)
    ]
    og = o // group
    y = np.zeros((n, o, *out))
    for g in range(group):
        for cell in itertools.product(*map(range, kernel)):
            window = tuple(
                slice(k * d, k * d + (m - 1) * st + 1, st)
                for k, d, m, st in zip(cell, dilation, out, stride, strict=True)
            )
            patch = padded[:, g * cg : (g + 1) * cg][(..., *window)]
            cell_weights = w[(slice(g * og, (g + 1) * og), slice(None), *cell)]
            y[:, g * og : (g + 1) * og] += np.einsum("nc...,oc->no...", patch, cell_weights)
    if b is not None:
        y += b.reshape(1, -1, *[1] * axes)
    return y


def deconv_nd_reference(x, w, b=None, stride=None, pad=None, dilation=None, group=1):
    """Scatter each input position through each kernel cell onto the padded output."""
    n, c, *spatial = x.shape
    _, og, *kernel = w.shape
    axes = len(spatial)
    stride, pad = per_axis(stride, axes, 1), per_axis(pad, axes, 0)
    dilation = per_axis(dilation, axes, 1)
    cg = c // group
    full = [
        st * (s - 1) + d * (k - 1) + 1
        for s, st, d, k in zip(spatial, stride, dilation, kernel, strict=True)
    ]
    y = np.zeros((n, og * group, *full))
    for g in range(group):
        for cell in itertools.product(*map(range, kernel)):
            window = tuple(
                slice(k * d, k * d + (s - 1) * st + 1, st)
                for k, d, s, st in zip(cell, dilation, spatial, stride, strict=True)
            )
            cell_weights = w[(slice(g * cg, (g + 1) * cg), slice(None), *cell)]
            y[(slice(None), slice(g * og, (g + 1) * og), *window)] += np.einsum(
                "nc...,co->no...", x[:, g * cg : (g + 1) * cg], cell_weights
            )
    y = y[(..., *(slice(p, f - p) for p, f in zip(pad, full, strict=True)))]
    if b is not None:
        y = y + b.reshape(1, -1, *[1] * axes)
    return y


def random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture(params=[im2col.BATCH_FIRST, im2col.BATCH_LAST])
def layout(request, monkeypatch):
    """Run a test once per column layout, whatever the shape would pick."""
    monkeypatch.setattr(im2col, "choose_layout", lambda *args: request.param)
    return request.param


#: name: (convolution_param body, bottom shape, reference options)
CONV_CASES = {
    "1d": ("num_output: 3 kernel_size: 3", (2, 2, 9), {}),
    "1d_stride_pad_dilation": (
        "num_output: 2 kernel_size: 3 stride: 2 pad: 2 dilation: 2",
        (2, 3, 11),
        dict(stride=2, pad=2, dilation=2),
    ),
    "1d_group_no_bias": (
        "num_output: 4 kernel_size: 2 group: 2 bias_term: false",
        (2, 4, 6),
        dict(group=2),
    ),
    "3d_c3d": ("num_output: 4 kernel_size: 3 pad: 1", (2, 2, 4, 5, 5), dict(pad=1)),
    "3d_per_axis": (
        "num_output: 3 kernel_size: 1 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 "
        "stride: 1 pad: 0 pad: 1 pad: 1 dilation: 1 dilation: 1 dilation: 2",
        (2, 2, 3, 5, 4),
        dict(stride=(1, 2, 1), pad=(0, 1, 1), dilation=(1, 1, 2)),
    ),
    "3d_group": ("num_output: 4 kernel_size: 2 group: 2", (2, 4, 3, 4, 3), dict(group=2)),
    "3d_no_bias_stride": (
        "num_output: 2 kernel_size: 3 stride: 2 pad: 1 bias_term: false",
        (2, 2, 5, 3, 4),
        dict(stride=2, pad=1),
    ),
    "3d_pointwise": ("num_output: 3 kernel_size: 1", (2, 2, 3, 3, 2), {}),
    "4d": (
        "num_output: 2 kernel_size: 2 pad: 1 stride: 2",
        (1, 2, 3, 2, 3, 3),
        dict(pad=1, stride=2),
    ),
    "2d_force_nd": (
        "num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2 force_nd_im2col: true",
        (2, 2, 5, 6),
        dict(pad=1, stride=2, group=2),
    ),
}


def references(reference, options, bias_term):
    if bias_term:
        return lambda x, w, b: reference(x, w, b, **options)
    return lambda x, w: reference(x, w, **options)


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_convolution_nd_forward_and_gradients(name, layout):
    body, shape, options = CONV_CASES[name]
    bias = "bias_term: false" not in body
    layer, _, top = check_layer(
        layer_text("Convolution", body),
        [random(*shape)],
        reference=references(conv_nd_reference, options, bias),
    )
    assert layer.layout == layout and len(layer.blobs) == (2 if bias else 1)
    assert layer.force_nd == ("force_nd_im2col" in body)


DECONV_CASES = {
    "1d_upsample": (
        "num_output: 2 kernel_size: 4 stride: 2 pad: 1",
        (2, 3, 5),
        dict(stride=2, pad=1),
    ),
    "3d": ("num_output: 3 kernel_size: 3 pad: 1", (2, 2, 3, 3, 4), dict(pad=1)),
    "3d_per_axis_group_no_bias": (
        "num_output: 4 kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 2 stride: 1 "
        "stride: 2 dilation: 1 dilation: 2 dilation: 1 group: 2 bias_term: false",
        (2, 4, 2, 3, 2),
        dict(stride=(2, 1, 2), dilation=(1, 2, 1), group=2),
    ),
    "2d_force_nd": (
        "num_output: 2 kernel_size: 3 stride: 2 pad: 1 force_nd_im2col: true",
        (2, 3, 3, 4),
        dict(stride=2, pad=1),
    ),
}


@pytest.mark.parametrize("name", list(DECONV_CASES))
def test_deconvolution_nd_forward_and_gradients(name, layout):
    body, shape, options = DECONV_CASES[name]
    bias = "bias_term: false" not in body
    layer, _, _ = check_layer(
        layer_text("Deconvolution", body),
        [random(*shape)],
        reference=references(deconv_nd_reference, options, bias),
    )
    assert layer.layout == layout


def test_parameter_and_top_shapes_3d():
    layer, _, top = build_layer(
        layer_text(
            "Convolution", "num_output: 6 kernel_size: 3 kernel_size: 1 kernel_size: 2 group: 3"
        ),
        [random(2, 9, 4, 5, 6)],
    )
    assert layer.blobs[0].shape == (6, 3, 3, 1, 2)
    assert top[0].shape == (2, 6, 2, 5, 5)
    deconv, _, dtop = build_layer(
        layer_text("Deconvolution", "num_output: 4 kernel_size: 2 stride: 2 group: 2"),
        [random(1, 6, 2, 3, 4)],
    )
    assert deconv.blobs[0].shape == (6, 2, 2, 2, 2)
    assert dtop[0].shape == (1, 4, 4, 6, 8)


def test_channel_axis_2_with_three_spatial_axes(layout):
    """axis: 2 makes the first two axes the batch, and the last three spatial."""
    x = random(2, 3, 2, 4, 3, 3)

    def reference(x, w, b):
        return conv_nd_reference(x.reshape(6, 2, 4, 3, 3), w, b, pad=1).reshape(2, 3, 4, 4, 3, 3)

    check_layer(
        layer_text("Convolution", "num_output: 4 kernel_size: 3 pad: 1 axis: 2"),
        [x],
        reference=reference,
    )


def test_no_spatial_axes_is_a_fully_connected_layer():
    """Caffe allows 0 spatial axes (channel axis last): a 1x1 convolution, W x + b."""
    layer, _, top = check_layer(
        layer_text("Convolution", "num_output: 3 kernel_size: 1 axis: -1"),
        [random(4, 5)],
        reference=lambda x, w, b: x @ w.T + b,
    )
    assert layer.blobs[0].shape == (3, 5) and top[0].shape == (4, 3)


def test_3d_batch_split_into_chunks(monkeypatch, layout):
    """Batches whose columns exceed the limit are unfolded in chunks, same results."""
    monkeypatch.setattr(im2col, "MAX_COL_ELEMENTS", 300)
    for kind, reference in (
        ("Convolution", conv_nd_reference),
        ("Deconvolution", deconv_nd_reference),
    ):
        layer, _, _ = check_layer(
            layer_text(kind, "num_output: 2 kernel_size: 2 pad: 1"),
            [random(4, 2, 2, 3, 2)],
            reference=lambda x, w, b, reference=reference: reference(x, w, b, pad=1),
        )
        assert len(layer.chunks) > 1


def test_3d_reshape_to_a_new_input_size():
    layer, bottom, top = build_layer(
        layer_text("Convolution", "num_output: 2 kernel_size: 3 pad: 1"), [random(1, 2, 3, 4, 5)]
    )
    x = random(3, 2, 4, 6, 3, seed=4)
    bottom[0].reshape(*x.shape)
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    expected = conv_nd_reference(x, layer.blobs[0].data, layer.blobs[1].data, pad=1)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-12)


def test_3d_float32_against_the_float64_reference():
    x = random(2, 8, 4, 7, 7).astype(np.float32)
    layer, bottom, top = build_layer(
        'type: "Convolution" convolution_param { num_output: 16 kernel_size: 3 pad: 1 '
        'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } }',
        [x],
        dtype=np.float32,
    )
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32 and top[0].shape == (2, 16, 4, 7, 7)
    expected = conv_nd_reference(
        x.astype(np.float64), layer.blobs[0].data, layer.blobs[1].data, pad=1
    )
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_force_nd_im2col_gives_the_2d_results():
    body = "num_output: 4 kernel_size: 3 stride: 2 pad: 1 dilation: 2"
    x = random(2, 3, 9, 8)
    plain, pb, pt = build_layer(layer_text("Convolution", body), [x])
    forced, fb, ft = build_layer(layer_text("Convolution", body + " force_nd_im2col: true"), [x])
    for mine, theirs in zip(forced.blobs, plain.blobs, strict=True):
        mine.data[...] = theirs.data
    for layer, bottom, top in ((plain, pb, pt), (forced, fb, ft)):
        layer.forward(bottom, top)
        top[0].diff[...] = random(*top[0].shape, seed=9)
        layer.backward(top, [True], bottom)
    np.testing.assert_allclose(ft[0].data, pt[0].data, rtol=1e-12)
    np.testing.assert_allclose(fb[0].diff, pb[0].diff, rtol=1e-12)
    np.testing.assert_allclose(forced.blobs[0].diff, plain.blobs[0].diff, rtol=1e-12)


def test_deconvolution_3d_is_the_transpose_of_convolution_3d():
    """<conv(x), y> == <x, deconv(y)> with the same weights and no bias."""
    body = "num_output: 3 kernel_size: 3 stride: 2 pad: 1 bias_term: false"
    x, y = random(2, 4, 5, 5, 3, seed=5), random(2, 3, 3, 3, 2, seed=6)
    conv, cb, ct = build_layer(layer_text("Convolution", body), [x])
    deconv, db, dt = build_layer(
        layer_text("Deconvolution", body.replace("num_output: 3", "num_output: 4")), [y]
    )
    deconv.blobs[0].data[...] = conv.blobs[0].data
    conv.forward(cb, ct)
    deconv.forward(db, dt)
    assert dt[0].shape == x.shape
    assert np.vdot(ct[0].data, y) == pytest.approx(np.vdot(x, dt[0].data), rel=1e-12)


# ---- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, shape, pattern",
    [
        (
            "num_output: 2 kernel_size: 3 kernel_size: 3",
            (1, 2, 4, 5, 6),
            r"kernel_size must be specified once, or once per spatial dimension \(kernel_size "
            r"specified 2 times; 3 spatial dims: bottom of shape \(1, 2, 4, 5, 6\) with "
            r"channel axis 1\)",
        ),
        (
            "num_output: 2 kernel_size: 3 stride: 1 stride: 2",
            (1, 2, 7),
            r"stride specified 2 times; 1 spatial dims: bottom of shape \(1, 2, 7\)",
        ),
        (
            "num_output: 2 kernel_size: 1 pad: 0 pad: 0 pad: 0 pad: 0",
            (1, 2, 4, 4, 4),
            "pad specified 4",
        ),
        (
            "num_output: 2 kernel_size: 2 dilation: 1 dilation: 2",
            (1, 2, 4, 4, 4),
            "dilation specified 2 times; 3 spatial dims",
        ),
        (
            "num_output: 2 kernel_h: 3 kernel_w: 3",
            (1, 2, 4, 5, 6),
            r"kernel_h/kernel_w can only be used for 2-D convolution, but the bottom of shape "
            r"\(1, 2, 4, 5, 6\) with channel axis 1 has 3 spatial axes",
        ),
        ("num_output: 2 kernel_size: 3 stride_h: 2", (1, 2, 9), "stride_h/stride_w can only"),
        ("num_output: 2 kernel_size: 3 pad_w: 1", (1, 2, 4, 4, 4), "pad_h/pad_w can only"),
        (
            "num_output: 2 kernel_size: 3 kernel_size: 0 kernel_size: 3",
            (1, 2, 4, 4, 4),
            r"kernel dimensions must be positive, got \(3, 0, 3\)",
        ),
        (
            "num_output: 2 kernel_size: 3 stride: 0",
            (1, 2, 4, 4, 4),
            r"stride must be positive, got \(0, 0, 0\)",
        ),
        (
            "num_output: 2 kernel_size: 5",
            (1, 2, 3, 6, 6),
            r"kernel extent 5 along spatial axis 0 is larger than the padded input \(3 \+ 2\*0\); "
            r"bottom spatial shape is \(3, 6, 6\) \(bottom of shape \(1, 2, 3, 6, 6\)",
        ),
        (
            "num_output: 2 kernel_size: 3 dilation: 1 dilation: 1 dilation: 3",
            (1, 2, 4, 4, 6),
            r"kernel extent 7 along spatial axis 2 is larger than the padded input \(6 \+ 2\*0\)",
        ),
        ("num_output: 2 kernel_size: 1", (1, 2, 3, 0, 3), r"along spatial axis 1 .*\(0 \+ 2\*0\)"),
    ],
)
def test_bad_nd_geometry(body, shape, pattern):
    with pytest.raises(CaffeliteError, match=pattern) as info:
        build_layer(layer_text("Convolution", body), [random(*shape)])
    assert "layer 'convolution' (type Convolution)" in str(info.value)


def test_deconvolution_3d_empty_output():
    with pytest.raises(
        CaffeliteError,
        match=r"deconvolution output would be empty: input \(1, 3, 3\), kernel \(2, 2, 2\), "
        r"stride \(1, 1, 1\), pad \(1, 1, 1\), dilation \(1, 1, 1\) give \(0, 2, 2\)",
    ):
        build_layer(
            layer_text("Deconvolution", "num_output: 2 kernel_size: 2 pad: 1"),
            [random(1, 2, 1, 3, 3)],
        )


def test_the_number_of_axes_may_not_change():
    layer, bottom, top = build_layer(
        layer_text("Convolution", "num_output: 2 kernel_size: 1"), [random(1, 2, 3, 3, 3)]
    )
    bottom[0].reshape(1, 2, 3, 3)
    with pytest.raises(CaffeliteError, match=r"bottom must keep 5 axes, got shape \(1, 2, 3, 3\)"):
        layer.reshape(bottom, top)


# ---- size limits (caffelite.limits), as in 2-D --------------------------------------------
def limited_net(layer: str, shape=(1, 16, 16, 16, 16)):
    from caffelite.layer import TEST
    from caffelite.net import Net
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import parse_text

    dims = " ".join(f"dim: {d}" for d in shape)
    text = (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}'
        + layer
    )
    return Net(parse_text(text, caffe_pb2.NetParameter()), TEST)


def test_3d_column_buffer_over_the_memory_limit_is_refused(monkeypatch):
    """16 x 27 x 16^3 columns (7 MiB) for a 16 KiB top: the work array is what is too big.
    (The shared scratch starts empty, as in a fresh process: earlier tests' buffers would
    otherwise be reused without an allocation to check.)"""
    from caffelite import limits

    monkeypatch.setattr(im2col, "_SHARED_SCRATCH", {})

    conv = (
        'layer { name: "conv3d" type: "Convolution" bottom: "data" top: "conv3d" '
        "convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }"
    )
    with limits.memory_limit("1M"):
        net = limited_net(conv)
        with pytest.raises(
            CaffeliteError,
            match=r"layer 'conv3d' \(type Convolution\): .*'columns' of shape "
            r"\(1, 16, 3, 3, 3, 16, 16, 16\) needs .* more than the memory limit of 1\.0 MiB",
        ):
            net.forward()


def test_errors_in_a_net_name_the_bottom_blob():
    conv = (
        'layer { name: "conv3d" type: "Convolution" bottom: "data" top: "conv3d" '
        "convolution_param { num_output: 1 kernel_size: 3 kernel_size: 3 } }"
    )
    with pytest.raises(
        CaffeliteError,
        match=r"layer 'conv3d' \(type Convolution\): kernel_size must be specified once, or "
        r"once per spatial dimension \(kernel_size specified 2 times; 3 spatial dims: "
        r"bottom 'data' of shape \(1, 2, 4, 4, 4\) with channel axis 1\)",
    ):
        limited_net(conv, shape=(1, 2, 4, 4, 4))
