"""Convolution: forward against a direct-sum reference, gradients, Caffe's errors."""

import numpy as np
import pytest

from caffelite import backend, im2col
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.layers import conv
from caffelite.testing import build_layer, check_layer, layer_param_from_text

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" }'


def conv_text(body: str, fillers: str = FILLERS) -> str:
    return f'type: "Convolution" convolution_param {{ {body} {fillers} }}'


def conv_reference(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Direct sum over every window, one output position at a time."""
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    padded = np.zeros((n, c, h + 2 * pad[0], width + 2 * pad[1]))
    padded[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + width] = x
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (width + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for g in range(group):
        wg = w[g * og : (g + 1) * og]
        for i in range(oh):
            for j in range(ow):
                rows = [i * stride[0] + a * dilation[0] for a in range(kh)]
                cols = [j * stride[1] + a * dilation[1] for a in range(kw)]
                patch = padded[:, g * cg : (g + 1) * cg][:, :, rows][:, :, :, cols]
                y[:, g * og : (g + 1) * og, i, j] = np.einsum("nchw,ochw->no", patch, wg)
    if b is not None:
        y += b[None, :, None, None]
    return y


def random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


CASES = {
    "plain": ("num_output: 4 kernel_size: 3", (2, 3, 6, 7), {}),
    "pad_stride": (
        "num_output: 3 kernel_size: 3 pad: 1 stride: 2",
        (2, 2, 7, 6),
        dict(stride=(2, 2), pad=(1, 1)),
    ),
    "dilation": (
        "num_output: 2 kernel_size: 3 dilation: 2 pad: 2",
        (2, 2, 6, 6),
        dict(pad=(2, 2), dilation=(2, 2)),
    ),
    "rectangular_hw": (
        "num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        (2, 2, 7, 5),
        dict(stride=(2, 1), pad=(1, 0)),
    ),
    "per_axis_repeated": (
        "num_output: 2 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2 pad: 0 pad: 1",
        (1, 3, 5, 6),
        dict(stride=(1, 2), pad=(0, 1)),
    ),
    "group2": (
        "num_output: 6 kernel_size: 3 group: 2 pad: 1",
        (2, 4, 5, 5),
        dict(pad=(1, 1), group=2),
    ),
    # kernel volume > output plane: the batch-last layout
    "batch_last": ("num_output: 5 kernel_size: 3", (3, 6, 5, 4), {}),
    "batch_last_group_pad": (
        "num_output: 4 kernel_size: 3 group: 2 pad: 1 stride: 2",
        (3, 8, 4, 5),
        dict(group=2, pad=(1, 1), stride=(2, 2)),
    ),
    "pointwise": ("num_output: 3 kernel_size: 1", (2, 2, 5, 4), {}),
    "pointwise_group": ("num_output: 4 kernel_size: 1 group: 2", (3, 4, 6, 6), dict(group=2)),
}


@pytest.fixture(params=[im2col.BATCH_FIRST, im2col.BATCH_LAST])
def layout(request, monkeypatch):
    """Run a test once per column layout, whatever the shape would pick."""
    monkeypatch.setattr(im2col, "choose_layout", lambda *args: request.param)
    return request.param


@pytest.fixture(params=["batched", "accumulated"])
def weight_grad(request, monkeypatch):
    """Run a test once per weight-gradient path (see conv._ACCUMULATE_MIN), whatever the
    weights' size would pick."""
    monkeypatch.setattr(conv, "_ACCUMULATE_MIN", 0 if request.param == "accumulated" else 1 << 62)
    return request.param


@pytest.mark.parametrize("name", list(CASES))
def test_convolution_forward_and_gradients(name, layout, weight_grad):
    body, shape, options = CASES[name]
    layer, _, _ = check_layer(
        conv_text(body),
        [random(*shape)],
        reference=lambda x, w, b: conv_reference(x, w, b, **options),
    )
    assert layer.layout == layout


def test_layout_follows_the_shape():
    wide = conv_text("num_output: 2 kernel_size: 3")
    first, _, _ = build_layer(wide, [random(2, 1, 12, 12)])  # 9 < 10*10
    last, _, _ = build_layer(wide, [random(2, 4, 5, 5)])  # 36 > 3*3
    one_image, _, _ = build_layer(wide, [random(1, 4, 5, 5)])  # the layouts coincide
    assert first.layout == im2col.BATCH_FIRST
    assert last.layout == im2col.BATCH_LAST
    assert one_image.layout == im2col.BATCH_FIRST


def test_no_bias():
    layer, _, _ = check_layer(
        conv_text("num_output: 3 kernel_size: 2 bias_term: false"),
        [random(2, 2, 4, 5)],
        reference=lambda x, w: conv_reference(x, w),
    )
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3, 2, 2, 2)


def test_parameter_shapes_and_fillers():
    text = conv_text(
        "num_output: 6 kernel_h: 3 kernel_w: 2 group: 3",
        'weight_filler { type: "constant" value: 0.5 } bias_filler { type: "constant" value: 2 }',
    )
    layer, _, top = build_layer(text, [random(2, 9, 5, 5)])
    assert layer.blobs[0].shape == (6, 3, 3, 2)
    assert layer.blobs[1].shape == (6,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.5)
    np.testing.assert_array_equal(layer.blobs[1].data, 2.0)
    assert top[0].shape == (2, 6, 3, 4)
    assert layer.param_propagate_down == [True, True]


def test_channel_axis_2_treats_leading_axes_as_batch(layout):
    x = random(2, 3, 2, 5, 4)

    def reference(x, w, b):
        flat = conv_reference(x.reshape(6, 2, 5, 4), w, b, pad=(1, 1))
        return flat.reshape(2, 3, 4, 5, 4)

    check_layer(conv_text("num_output: 4 kernel_size: 3 pad: 1 axis: 2"), [x], reference=reference)


def test_two_bottoms_share_the_weights(layout):
    a, b = random(2, 2, 5, 5, seed=1), random(2, 2, 5, 5, seed=2)

    def reference(x0, x1, w, bias):
        return [conv_reference(x0, w, bias), conv_reference(x1, w, bias)]

    check_layer(conv_text("num_output: 3 kernel_size: 3"), [a, b], reference=reference, num_top=2)


def test_batch_split_into_chunks(monkeypatch, layout, weight_grad):
    """Batches whose columns exceed the limit are unfolded in chunks, same results."""
    monkeypatch.setattr(im2col, "MAX_COL_ELEMENTS", 300)
    for body, shape, options in (CASES["pad_stride"], CASES["batch_last"]):
        layer, _, _ = check_layer(
            conv_text(body),
            [random(5, *shape[1:])],
            reference=lambda x, w, b, options=options: conv_reference(x, w, b, **options),
        )
        assert len(layer.chunks) > 1


def test_no_bottom_gradient_leaves_bottom_diff_alone(layout):
    layer, bottom, top = build_layer(
        conv_text("num_output: 2 kernel_size: 3"), [random(2, 2, 5, 5)]
    )
    layer.forward(bottom, top)
    top[0].diff[...] = random(*top[0].shape, seed=3)
    bottom[0].diff[...] = 7.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)
    # the weight gradient is still there: sum over images and windows of dy * x
    x, dy = bottom[0].data, top[0].diff
    expected = np.zeros((2, 2, 3, 3))
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, x[:, :, i : i + 3, j : j + 3])
    np.testing.assert_allclose(layer.blobs[0].diff, expected, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_reshape_to_a_new_input_size():
    layer, bottom, top = build_layer(
        conv_text("num_output: 2 kernel_size: 3 pad: 1"), [random(2, 3, 6, 6)]
    )
    with backend.precision(np.float64):
        bottom[0].reshape(4, 3, 5, 7)
    bottom[0].data[...] = random(4, 3, 5, 7, seed=4)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    expected = conv_reference(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, pad=(1, 1))
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-12)


def test_lenet_shapes_in_float32():
    """LeNet's conv2 in float32 (batch-last), against the float64 reference."""
    x = random(4, 20, 12, 12).astype(np.float32)
    layer, bottom, top = build_layer(
        'type: "Convolution" convolution_param { num_output: 50 kernel_size: 5 '
        'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } }',
        [x],
        dtype=np.float32,
    )
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32 and top[0].shape == (4, 50, 8, 8)
    expected = conv_reference(x.astype(np.float64), layer.blobs[0].data, layer.blobs[1].data)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_loaded_weights_are_kept():
    param = layer_param_from_text(conv_text("num_output: 2 kernel_size: 3 bias_term: false"))
    weights = Blob(2, 3, 3, 3)
    weights.data[...] = random(2, 3, 3, 3)
    param.blobs.append(weights.to_proto())
    layer = create_layer(param)
    bottom, top = [Blob(1, 3, 5, 5)], [Blob()]
    layer.setup_layer(bottom, top)
    np.testing.assert_array_equal(layer.blobs[0].data, weights.data)


# ---- errors ----------------------------------------------------------------------------
def setup_error(text, shape=(2, 4, 6, 6)):
    with pytest.raises(CaffeliteError) as info:
        build_layer(text, [random(*shape)])
    return str(info.value)


def test_group_must_divide_channels():
    message = setup_error(conv_text("num_output: 4 kernel_size: 3 group: 3"), (1, 4, 5, 5))
    assert "input channels (4)" in message and "group (3)" in message
    assert "'convolution'" in message


def test_group_must_divide_num_output():
    message = setup_error(conv_text("num_output: 3 kernel_size: 3 group: 2"))
    assert "num_output (3)" in message and "group (2)" in message


@pytest.mark.parametrize(
    "body, pattern",
    [
        (
            "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3",
            "kernel_size or kernel_h/kernel_w",
        ),
        ("num_output: 2", "kernel_size must be specified once.*specified 0 times"),
        ("num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3", "specified 3 times"),
        ("num_output: 2 kernel_size: 3 stride: 0", r"stride must be positive, got \(0, 0\)"),
        ("num_output: 2 kernel_size: 3 pad: 1 pad_h: 1", "pad or pad_h/pad_w"),
        ("num_output: 2 kernel_size: 3 dilation: 1 dilation: 1 dilation: 1", "dilation"),
        ("num_output: 2 kernel_h: 3", r"kernel dimensions must be positive, got \(3, 0\)"),
        ("kernel_size: 3", "num_output must be positive, got 0"),
        ("num_output: 2 kernel_size: 9", r"kernel extent 9 along h is larger than the padded"),
    ],
)
def test_bad_geometry(body, pattern):
    with pytest.raises(CaffeliteError, match=pattern):
        build_layer(conv_text(body), [random(1, 2, 6, 6)])


def test_loaded_weights_of_the_wrong_shape():
    param = layer_param_from_text(conv_text("num_output: 2 kernel_size: 3"))
    param.blobs.append(Blob(2, 3, 5, 5).to_proto())
    param.blobs.append(Blob(2).to_proto())
    with pytest.raises(
        CaffeliteError,
        match=r"weights blob has shape \(2, 3, 5, 5\), expected "
        r"\(2, 3, 3, 3\)",
    ):
        create_layer(param).setup_layer([Blob(1, 3, 5, 5)], [Blob()])


def test_loaded_blob_count_must_match_bias_term():
    param = layer_param_from_text(conv_text("num_output: 2 kernel_size: 3"))
    param.blobs.append(Blob(2, 3, 3, 3).to_proto())
    with pytest.raises(CaffeliteError, match=r"expected 2 parameter blob\(s\).*got 1"):
        create_layer(param).setup_layer([Blob(1, 3, 5, 5)], [Blob()])


def test_channels_may_not_change_on_reshape():
    layer, bottom, top = build_layer(
        conv_text("num_output: 2 kernel_size: 3"), [random(1, 3, 5, 5)]
    )
    bottom[0].reshape(1, 4, 5, 5)
    with pytest.raises(CaffeliteError, match=r"bottom has 4 channels.*set up for 3"):
        layer.reshape(bottom, top)


def test_a_reshape_with_the_bottoms_of_the_last_checks_nothing_again_but_new_ones_do():
    """The reshape before each forward skips what the same bottoms gave last time; a
    change to any bottom (the second included) is checked and planned afresh."""
    text = conv_text("num_output: 2 kernel_size: 3")
    layer, bottom, top = build_layer(text, [random(1, 3, 5, 5), random(1, 3, 5, 5)], num_top=2)
    chunks = layer.chunks
    layer.reshape(bottom, top)
    assert layer.chunks is chunks and top[1].shape == (1, 2, 3, 3)
    bottom[1].reshape(1, 3, 6, 6)
    with pytest.raises(CaffeliteError, match=r"bottom\[1\] is \(1, 3, 6, 6\)"):
        layer.reshape(bottom, top)
    with pytest.raises(CaffeliteError, match=r"bottom\[1\] is \(1, 3, 6, 6\)"):
        layer.reshape(bottom, top)  # a failed reshape is not remembered as a good one
    for blob in bottom:
        blob.reshape(2, 3, 7, 7)
    layer.reshape(bottom, top)
    assert top[0].shape == top[1].shape == (2, 2, 5, 5) and layer.num == 2


def test_bottoms_must_share_a_shape():
    with pytest.raises(CaffeliteError, match=r"bottom\[1\] is \(1, 2, 6, 6\)"):
        build_layer(
            conv_text("num_output: 2 kernel_size: 3"),
            [random(1, 2, 5, 5), random(1, 2, 6, 6)],
            num_top=2,
        )


# ---- Deconvolution -----------------------------------------------------------------------
def deconv_text(body: str, fillers: str = FILLERS) -> str:
    return f'type: "Deconvolution" convolution_param {{ {body} {fillers} }}'


def deconv_reference(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Scatter every input pixel through the kernel, one pixel and kernel cell at a time."""
    n, c, h, width = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (width - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, og * group, oh, ow))
    for g in range(group):
        xs, ws = x[:, g * cg : (g + 1) * cg], w[g * cg : (g + 1) * cg]
        for r in range(h):
            for q in range(width):
                for i in range(kh):
                    for j in range(kw):
                        row = r * stride[0] - pad[0] + i * dilation[0]
                        col = q * stride[1] - pad[1] + j * dilation[1]
                        if 0 <= row < oh and 0 <= col < ow:
                            y[:, g * og : (g + 1) * og, row, col] += xs[:, :, r, q] @ ws[:, :, i, j]
    if b is not None:
        y += b[None, :, None, None]
    return y


DECONV_CASES = {
    "upsample2": (
        "num_output: 3 kernel_size: 4 stride: 2 pad: 1",
        (2, 2, 3, 4),
        dict(stride=(2, 2), pad=(1, 1)),
    ),
    "plain": ("num_output: 2 kernel_size: 3", (2, 3, 3, 3), {}),
    "group_dilation_rect": (
        "num_output: 4 kernel_h: 2 kernel_w: 3 group: 2 dilation: 2 stride_h: 2 stride_w: 1",
        (2, 4, 3, 2),
        dict(group=2, dilation=(2, 2), stride=(2, 1)),
    ),
}


@pytest.mark.parametrize("name", list(DECONV_CASES))
def test_deconvolution_forward_and_gradients(name, layout, weight_grad):
    body, shape, options = DECONV_CASES[name]
    layer, _, _ = check_layer(
        deconv_text(body),
        [random(*shape)],
        reference=lambda x, w, b: deconv_reference(x, w, b, **options),
    )
    assert layer.layout == layout


def test_deconvolution_is_the_transpose_of_convolution():
    """<conv(x), y> == <x, deconv(y)> with the same weights and no bias."""
    body = "num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 1 bias_term: false"
    x, y = random(2, 4, 7, 7, seed=5), random(2, 3, 4, 4, seed=6)
    conv, cb, ct = build_layer(conv_text(body), [x])
    deconv, db, dt = build_layer(deconv_text(body.replace("num_output: 3", "num_output: 4")), [y])
    assert conv.blobs[0].shape == deconv.blobs[0].shape == (3, 4, 3, 3)
    deconv.blobs[0].data[...] = conv.blobs[0].data
    conv.forward(cb, ct)
    deconv.forward(db, dt)
    assert dt[0].shape == x.shape
    assert np.vdot(ct[0].data, y) == pytest.approx(np.vdot(x, dt[0].data), rel=1e-12)


def test_deconvolution_bilinear_upsampling():
    """FCN's fixed upsampling: group = channels, bilinear weights, factor 2."""
    text = (
        'type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 4 stride: 2 '
        'pad: 1 group: 2 bias_term: false weight_filler { type: "bilinear" } }'
    )
    x = np.ones((1, 2, 3, 3))
    layer, bottom, top = build_layer(text, [x])
    layer.forward(bottom, top)
    assert top[0].shape == (1, 2, 6, 6)
    # a constant image stays constant away from the border
    np.testing.assert_allclose(top[0].data[:, :, 1:-1, 1:-1], 1.0, rtol=1e-12)


def test_deconvolution_empty_output():
    with pytest.raises(CaffeliteError, match=r"deconvolution output would be empty"):
        build_layer(deconv_text("num_output: 2 kernel_size: 2 pad: 1"), [random(1, 2, 1, 1)])


def test_test_phase_columns_live_in_shared_scratch_and_backward_recomputes_them():
    """A TEST-phase layer keeps no columns; its backward must still be exact even after
    another layer's forward has overwritten the shared scratch."""
    from caffelite.layer import TEST, TRAIN
    from caffelite.testing import build_layer

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 7, 7))
    text = (
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 '
        'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }'
    )
    results = []
    for phase in (TRAIN, TEST):
        layer, bottom, top = build_layer(text, [x], phase=phase)
        other, other_bottom, other_top = build_layer(text, [rng.standard_normal((3, 2, 9, 9))])
        if results:
            for mine, theirs in zip(layer.blobs, results[0][0].blobs, strict=True):
                mine.data[...] = theirs.data
        layer.forward(bottom, top)
        other.forward(other_bottom, other_top)  # clobbers any shared scratch
        top[0].diff[...] = 1.0
        for blob in layer.blobs:
            blob.diff[...] = 0
        layer.backward(top, [True], bottom)
        results.append(
            (layer, top[0].data.copy(), bottom[0].diff.copy(), [b.diff.copy() for b in layer.blobs])
        )
    (_, y_train, dx_train, dw_train), (test_layer, y_test, dx_test, dw_test) = results
    assert test_layer._cols == {}
    np.testing.assert_allclose(y_test, y_train, rtol=1e-12)
    np.testing.assert_allclose(dx_test, dx_train, rtol=1e-12)
    for a, b in zip(dw_test, dw_train, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_test_net_with_force_backward_keeps_its_columns_for_backward():
    """force_backward: a backward follows each forward, so a TEST net's convolutions keep
    their columns as a TRAIN net's do; the gradients equal those of recomputed columns."""
    from caffelite.layer import TEST
    from caffelite.net import Net
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import parse_text

    text = """
    force_backward: true
    input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
            convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" } } }
    """
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 9))
    nets = []
    for keep in (True, False):
        net = Net(parse_text(text, caffe_pb2.NetParameter()), TEST)
        assert all(layer.backward_follows for layer in net.layers)
        if nets:
            for name, blobs in nets[0].params.items():
                for mine, theirs in zip(net.params[name], blobs, strict=True):
                    mine.data[...] = theirs.data
        for layer in net.layers:
            layer.backward_follows = keep  # False: the recomputing path, as the reference
        net.blobs["data"].data[...] = x
        net.forward()
        assert [bool(layer._cols) for layer in net.layers[1:]] == [keep, keep]
        net.blobs["conv2"].diff[...] = 1.0
        net.backward()
        nets.append(net)
    kept, recomputed = nets
    np.testing.assert_allclose(kept.blobs["data"].diff, recomputed.blobs["data"].diff, rtol=1e-12)
    for name, blobs in recomputed.params.items():
        for reference, mine in zip(blobs, kept.params[name], strict=True):
            assert np.abs(mine.diff).max() > 0
            np.testing.assert_allclose(mine.diff, reference.diff, rtol=1e-12)
