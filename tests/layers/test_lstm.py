"""LSTM: Caffe's unrolled net against a numpy recurrence, gradients, state, weights, learning."""

import numpy as np
import pytest
from recurrent_reference import lstm

from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.net import Net
from caffelite.proto import caffe_pb2
from caffelite.testing import build_layer, check_layer, layer_param_from_text

FILLERS = 'weight_filler { type: "gaussian" std: 0.4 } bias_filler { type: "gaussian" std: 0.4 }'


def lstm_text(extra="", num_output=5):
    return (
        f'type: "LSTM" name: "lstm1" recurrent_param {{ num_output: {num_output} '
        f"{FILLERS} {extra} }}"
    )


def sequences(steps=4, num=3, dim=(2, 3), seed=0):
    """x (T x N x ...) and cont with a sequence starting at t=0 and a restart in stream 1."""
    rng = np.random.default_rng(seed)
    cont = np.ones((steps, num))
    cont[0] = 0
    cont[2, 1] = 0
    return rng.standard_normal((steps, num) + dim), cont


def test_forward_and_gradients():
    x, cont = sequences()

    def reference(x, cont, w_xc, b_c, w_hc):
        return lstm(x, cont, w_xc, b_c, w_hc)[0]

    layer, _, top = check_layer(lstm_text(), [x, cont], reference=reference, bottom_indices=[0])
    assert top[0].shape == (4, 3, 5)


def test_caffe_parameter_order_and_shapes():
    """W_xc (4H x D), b_c (4H), W_hc (4H x H): the blobs a Caffe-trained LSTM stores."""
    x, cont = sequences(dim=(6,))
    layer, _, _ = build_layer(lstm_text(), [x, cont])
    assert [b.shape for b in layer.blobs] == [(20, 6), (20,), (20, 5)]
    net = layer.net
    owners = [
        net._layer_names[layer_id]
        for (layer_id, _), owner in zip(net.param_layer_indices, net.param_owners, strict=True)
        if owner == -1
    ]
    assert owners == ["lstm1_x_transform", "lstm1_x_transform", "lstm1_transform_1"]
    # every timestep's recurrent transform uses the one W_hc
    hidden = [net.layer_dict[f"lstm1_transform_{t}"].blobs[0] for t in (1, 2, 3, 4)]
    assert all(blob is layer.blobs[2] for blob in hidden)


def test_static_input_and_its_gradient():
    x, cont = sequences()
    x_static = np.random.default_rng(5).standard_normal((3, 4))

    def reference(x, cont, x_static, w_xc, b_c, w_static, w_hc):
        return lstm(x, cont, w_xc, b_c, w_hc, x_static=x_static, w_static=w_static)[0]

    layer, _, _ = check_layer(
        lstm_text(), [x, cont, x_static], reference=reference, bottom_indices=[0, 2]
    )
    assert [b.shape for b in layer.blobs] == [(20, 6), (20,), (20, 4), (20, 5)]


def test_expose_hidden_starts_from_the_given_state():
    x, cont = sequences()
    cont[0] = 1  # continue from the given h_0, c_0
    rng = np.random.default_rng(7)
    h0, c0 = rng.standard_normal((1, 3, 5)), rng.standard_normal((1, 3, 5))
    layer, bottom, top = build_layer(lstm_text("expose_hidden: true"), [x, cont, h0, c0], num_top=3)
    layer.forward(bottom, top)
    w = [b.data for b in layer.blobs]
    out, h_last, c_last = lstm(x, cont, *w, h0=h0[0], c0=c0[0])
    np.testing.assert_allclose(top[0].data, out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(top[1].data[0], h_last, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(top[2].data[0], c_last, rtol=1e-10, atol=1e-12)


def test_state_carries_over_to_the_next_batch():
    """Two batches of T steps with cont = 1 across the boundary equal one 2T sequence."""
    x, cont = sequences(steps=6, num=2)
    layer, bottom, top = build_layer(lstm_text(), [x[:3], cont[:3]])
    layer.forward(bottom, top)
    first = top[0].data.copy()
    bottom[0].data[...] = x[3:]
    bottom[1].data[...] = cont[3:]
    layer.forward(bottom, top)
    full = lstm(x, cont, *[b.data for b in layer.blobs])[0]
    np.testing.assert_allclose(np.concatenate([first, top[0].data]), full, rtol=1e-10, atol=1e-12)
    layer.reset()
    layer.forward(bottom, top)
    fresh = lstm(x[3:], cont[3:], *[b.data for b in layer.blobs])[0]
    np.testing.assert_allclose(top[0].data, fresh, rtol=1e-10, atol=1e-12)


def test_caffe_trained_weights_load(tmp_path):
    """A caffemodel holding the LSTM layer's three blobs in Caffe's order drives the net."""
    rng = np.random.default_rng(3)
    w_xc, b_c, w_hc = (rng.standard_normal(s) * 0.3 for s in [(20, 6), (20,), (20, 5)])
    model = caffe_pb2.NetParameter(name="trained")
    entry = model.layer.add(name="lstm1", type="LSTM")
    for array in (w_xc, b_c, w_hc):
        blob = entry.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.ravel().astype(np.float32))
    path = tmp_path / "lstm.caffemodel"
    path.write_bytes(model.SerializeToString())
    net = Net(_lstm_net(), caffe_pb2.TEST, weights=str(path))
    x, cont = sequences(dim=(6,))
    net.blobs["data"].data[...] = x
    net.blobs["cont"].data[...] = cont
    net.forward()
    expected = lstm(x, cont, *(a.astype(np.float32).astype(np.float64) for a in (w_xc, b_c, w_hc)))
    np.testing.assert_allclose(net.blobs["h"].data, expected[0], rtol=1e-5, atol=1e-6)
    # and it saves back in the same layout
    saved = net.to_proto().layer[list(net.layer_dict).index("lstm1")]
    assert [tuple(b.shape.dim) for b in saved.blobs] == [(20, 6), (20,), (20, 5)]


def _lstm_net():
    param = caffe_pb2.NetParameter(name="lstm_net")
    inputs = param.layer.add(name="input", type="Input", top=["data", "cont"])
    inputs.input_param.shape.add(dim=[4, 3, 6])
    inputs.input_param.shape.add(dim=[4, 3])
    layer = param.layer.add()
    layer.CopyFrom(layer_param_from_text(lstm_text()))
    layer.bottom.extend(["data", "cont"])
    layer.top.append("h")
    return param


def test_layer_param_blobs_load():
    """Weights embedded in the LayerParameter (pycaffe's NetSpec / to_proto) are used."""
    x, cont = sequences(dim=(6,))
    layer, _, _ = build_layer(lstm_text(), [x, cont])
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(layer.layer_param)
    param.blobs.extend(b.to_proto() for b in layer.blobs)
    with backend.precision(np.float64):
        from caffelite.blob import Blob
        from caffelite.layer import create_layer

        again = create_layer(param)
        bottom = [Blob(x.shape), Blob(cont.shape)]
        bottom[0].data[...], bottom[1].data[...] = x, cont
        top = [Blob()]
        again.setup_layer(bottom, top)
        again.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, lstm(x, cont, *[b.data for b in layer.blobs])[0])


def test_debug_info_logs_the_unrolled_net(caplog):
    x, cont = sequences()
    layer, bottom, top = build_layer(lstm_text("debug_info: true"), [x, cont])
    with caplog.at_level("INFO", logger="caffelite"):
        layer.forward(bottom, top)
        top[0].diff[...] = 1
        layer.backward(top, [True, False], bottom)
    text = caplog.text
    assert "[Forward] Layer lstm1_unit_4, top blob h_4" in text
    # Caffe's wording: forward names a parameter by its ParamSpec name, backward by index.
    assert "[Forward] Layer lstm1_x_transform, param blob W_xc data" in text
    assert "[Backward] Layer lstm1_x_transform, param blob 0 diff" in text


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((4,), (4, 3)), "at least 2 axes"),
        (((4, 3, 2), (4, 2)), "cont"),
        (((4, 3, 2), (4, 3), (2, 5)), "static input"),
    ],
)
def test_shape_errors(shapes, message):
    with pytest.raises(CaffeliteError, match=message):
        build_layer(lstm_text(), [np.zeros(s) for s in shapes])


def test_timesteps_may_not_change_but_streams_may():
    x, cont = sequences()
    layer, bottom, top = build_layer(lstm_text(), [x, cont])
    with backend.precision(np.float64):
        bottom[0].reshape(4, 5, 2, 3)
        bottom[1].reshape(4, 5)
    bottom[0].data[...] = np.random.default_rng(1).standard_normal((4, 5, 2, 3))
    bottom[1].data[...] = 1
    bottom[1].data[0] = 0
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    expected = lstm(bottom[0].data, bottom[1].data, *[b.data for b in layer.blobs])[0]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-12)
    with backend.precision(np.float64):
        bottom[0].reshape(3, 5, 2, 3)
        bottom[1].reshape(3, 5)
    with pytest.raises(CaffeliteError, match="number of timesteps changed"):
        layer.reshape(bottom, top)


def test_no_gradient_to_cont():
    x, cont = sequences()
    layer, bottom, top = build_layer(lstm_text(), [x, cont])
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match="sequence indicators"):
        layer.backward(top, [True, True], bottom)
