"""InnerProduct: axis flattening, transpose storage, bias, gradients, errors."""

import numpy as np
import pytest

from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text

FILLERS = 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'


def ip_text(body: str, fillers: str = FILLERS) -> str:
    return f'type: "InnerProduct" inner_product_param {{ {body} {fillers} }}'


def ip_reference(x, w, b=None, axis=1, transpose=False):
    """Row by row: each leading index gets its own dot products with the weight rows."""
    lead = x.shape[:axis]
    rows = x.reshape(int(np.prod(lead)), -1)
    weights = w.T if transpose else w  # (N, K)
    out = np.zeros((rows.shape[0], weights.shape[0]))
    for r in range(rows.shape[0]):
        for o in range(weights.shape[0]):
            out[r, o] = sum(rows[r, k] * weights[o, k] for k in range(rows.shape[1]))
            if b is not None:
                out[r, o] += b[o]
    return out.reshape(lead + (weights.shape[0],))


def random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    "body, shape, options, weight_shape",
    [
        ("num_output: 4", (3, 2, 3, 2), {}, (4, 12)),
        ("num_output: 3 axis: 2", (2, 3, 4, 2), dict(axis=2), (3, 8)),
        ("num_output: 5 axis: -1", (2, 3, 4), dict(axis=2), (5, 4)),
        ("num_output: 4 transpose: true", (3, 5), dict(transpose=True), (5, 4)),
        (
            "num_output: 2 axis: 2 transpose: true",
            (2, 2, 3, 2),
            dict(axis=2, transpose=True),
            (6, 2),
        ),
        # at least twice as many outputs as rows: forward takes (W . x^T)^T
        ("num_output: 7", (3, 2, 2), {}, (7, 4)),
        ("num_output: 9 transpose: true", (2, 5), dict(transpose=True), (5, 9)),
        ("num_output: 6 axis: 2", (1, 2, 3), dict(axis=2), (6, 3)),
    ],
)
def test_inner_product_forward_and_gradients(body, shape, options, weight_shape):
    layer, _, top = check_layer(
        ip_text(body),
        [random(*shape)],
        reference=lambda x, w, b: ip_reference(x, w, b, **options),
    )
    assert layer.blobs[0].shape == weight_shape
    assert layer.blobs[1].shape == (
        weight_shape[1] if options.get("transpose") else weight_shape[0],
    )


@pytest.mark.parametrize("num_output", [3, 8], ids=["x_first", "weights_first"])
@pytest.mark.parametrize("transpose", ["false", "true"])
def test_no_bias(transpose, num_output):
    layer, _, _ = check_layer(
        ip_text(f"num_output: {num_output} bias_term: false transpose: {transpose}"),
        [random(4, 5)],
        reference=lambda x, w: ip_reference(x, w, transpose=transpose == "true"),
    )
    assert len(layer.blobs) == 1
    assert layer.weights_first == (num_output == 8)


def test_the_product_order_follows_the_batch():
    """(W . x^T)^T where the layer has at least twice as many outputs as the batch has
    rows and there is more than one row; x . W^T otherwise."""
    for rows, num_output, expected in [(4, 8, True), (4, 7, False), (1, 500, False)]:
        layer, _, _ = build_layer(ip_text(f"num_output: {num_output}"), [random(rows, 3)])
        assert layer.weights_first == expected, (rows, num_output)


def test_gradients_by_hand():
    layer, bottom, top = build_layer(ip_text("num_output: 3"), [random(4, 5)])
    layer.forward(bottom, top)
    dy = random(4, 3, seed=1)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 1.0  # parameter diffs accumulate
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + dy.T @ bottom[0].data, rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, dy @ layer.blobs[0].data, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=0), rtol=1e-12)


def test_float32_lenet_ip1():
    x = random(8, 50, 4, 4).astype(np.float32)
    layer, bottom, top = build_layer(ip_text("num_output: 500"), [x], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].shape == (8, 500) and top[0].data.dtype == np.float32
    expected = x.reshape(8, -1).astype(np.float64) @ layer.blobs[0].data.T + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_batch_size_may_change():
    layer, bottom, top = build_layer(ip_text("num_output: 2"), [random(3, 4)])
    bottom[0].reshape(5, 4)
    layer.reshape(bottom, top)
    assert top[0].shape == (5, 2)


def test_input_size_may_not_change():
    layer, bottom, top = build_layer(ip_text("num_output: 2"), [random(3, 2, 2)])
    bottom[0].reshape(3, 5)
    with pytest.raises(CaffeliteError, match=r"incompatible.*\(3, 5\) flattens to 5.*expected 4"):
        layer.reshape(bottom, top)


def test_num_output_required():
    with pytest.raises(CaffeliteError, match="num_output must be positive, got 0"):
        build_layer('type: "InnerProduct"', [random(2, 3)])


def test_loaded_weights_kept_and_checked():
    param = layer_param_from_text(ip_text("num_output: 2 transpose: true"))
    weights = Blob(3, 2)
    weights.data[...] = random(3, 2)
    param.blobs.extend([weights.to_proto(), Blob(2).to_proto()])
    layer = create_layer(param)
    layer.setup_layer([Blob(4, 3)], [Blob()])
    np.testing.assert_array_equal(layer.blobs[0].data, weights.data)

    wrong = layer_param_from_text(ip_text("num_output: 2"))
    wrong.blobs.extend([weights.to_proto(), Blob(2).to_proto()])
    with pytest.raises(CaffeliteError, match=r"weights blob has shape \(3, 2\), expected \(2, 3\)"):
        create_layer(wrong).setup_layer([Blob(4, 3)], [Blob()])

    missing = layer_param_from_text(ip_text("num_output: 2 transpose: true"))
    missing.blobs.append(weights.to_proto())
    with pytest.raises(CaffeliteError, match=r"expected 2 parameter blob\(s\).*got 1"):
        create_layer(missing).setup_layer([Blob(4, 3)], [Blob()])


def test_axis_out_of_range_names_the_layer():
    with pytest.raises(CaffeliteError, match=r"layer '\w+' \(type InnerProduct\).*axis 3 is out"):
        build_layer(ip_text("num_output: 2 axis: 3"), [random(2, 3)])


def test_weights_embedded_in_the_layer_may_use_the_legacy_4d_shape():
    """Old prototxts carry (1, 1, N, K) blobs; Caffe's ShapeEquals accepts them as (N, K)."""
    layer, bottom, top = build_layer(
        'type: "InnerProduct" inner_product_param { num_output: 2 } '
        "blobs { num: 1 channels: 1 height: 2 width: 3 data: [1, 2, 3, 4, 5, 6] } "
        "blobs { num: 1 channels: 1 height: 1 width: 2 data: [10, 20] }",
        [np.ones((1, 3))],
    )
    assert [b.shape for b in layer.blobs] == [(2, 3), (2,)]
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [[16.0, 35.0]])
