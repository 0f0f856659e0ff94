import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer

FILLERS = 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "uniform" min: -1 max: 1 }'


def _text(num_output=3, input_dim=5, extra=""):
    return (
        f'type: "Embed" embed_param {{ num_output: {num_output} input_dim: {input_dim} '
        f"{FILLERS} {extra} }}"
    )


def embed_reference(indices, weight, bias=None):
    out = np.zeros(indices.shape + (weight.shape[1],))
    for idx in np.ndindex(*indices.shape):
        row = weight[int(indices[idx])]
        out[idx] = row if bias is None else row + bias
    return out


@pytest.mark.parametrize(
    ("indices", "extra"),
    [
        (np.array([0.0, 4.0, 2.0, 2.0, 1.0]), ""),
        (np.array([[3.0, 3.0, 0.0], [1.0, 3.0, 4.0]]), ""),  # repeated rows accumulate
        (np.array([[2.0], [0.0], [2.0]]), "bias_term: false"),
        (np.array([[4.0, 4.0], [4.0, 1.0]]), "bias_term: false"),
    ],
)
def test_forward_and_param_gradients(indices, extra):
    layer, _, top = check_layer(
        _text(extra=extra), [indices], reference=embed_reference, bottom_indices=[]
    )
    assert top[0].shape == indices.shape + (3,)
    assert [b.shape for b in layer.blobs] == [(5, 3)] + ([] if extra else [(3,)])


def test_weight_diff_scatter_adds_repeated_indices():
    indices = np.array([1.0, 1.0, 3.0])
    layer, bottom, top = build_layer(_text(num_output=2, input_dim=4), [indices])
    layer.forward(bottom, top)
    top[0].diff[...] = [[1, 2], [10, 20], [100, 200]]
    for b in layer.blobs:
        b.diff[...] = 0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, [[0, 0], [11, 22], [0, 0], [100, 200]])
    np.testing.assert_array_equal(layer.blobs[1].diff, [111, 222])


def test_default_fillers_are_constant_zero():
    layer, bottom, top = build_layer(
        'type: "Embed" embed_param { num_output: 2 input_dim: 3 }', [np.array([1.0])]
    )
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, 0.0)
    assert len(layer.blobs) == 2


@pytest.mark.parametrize(
    ("bad", "shown"), [(5.0, "5"), (-1.0, "-1"), (1.5, "1.5"), (np.nan, "nan")]
)
def test_bad_indices(bad, shown):
    layer, bottom, top = build_layer(_text(), [np.array([0.0, bad])])
    with pytest.raises(CaffeliteError, match=rf"embed index {shown} is not an integer in \[0, 5\)"):
        layer.forward(bottom, top)


def test_no_gradient_for_the_indices():
    layer, bottom, top = build_layer(_text(), [np.array([1.0])])
    assert not layer.allow_force_backward(0)
    layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match="cannot backpropagate to its input"):
        layer.backward(top, [True], bottom)


def test_parameter_errors():
    with pytest.raises(CaffeliteError, match="num_output must be positive"):
        build_layer('type: "Embed" embed_param { input_dim: 3 }', [np.array([1.0])])
    with pytest.raises(CaffeliteError, match="input_dim must be positive"):
        build_layer('type: "Embed" embed_param { num_output: 3 }', [np.array([1.0])])
    loaded = (
        'type: "Embed" embed_param { num_output: 2 input_dim: 3 bias_term: false } '
        "blobs { shape { dim: 2 dim: 3 } data: [0, 0, 0, 0, 0, 0] }"
    )
    with pytest.raises(
        CaffeliteError, match=r"loaded weights blob has shape \(2, 3\), expected \(3, 2\)"
    ):
        build_layer(loaded, [np.array([1.0])])


def test_float32_keeps_dtype():
    layer, bottom, top = build_layer(_text(), [np.array([1.0, 2.0])], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(
        top[0].data, layer.blobs[0].data[[1, 2]] + layer.blobs[1].data, rtol=1e-6
    )
