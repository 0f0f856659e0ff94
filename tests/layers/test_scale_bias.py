"""Scale and Bias: learned and bottom operands over axis/num_axes variants, with and
without Scale's bias term, gradients wrt every input and parameter, in place, errors."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def broadcast_reference(x, operand, axis, combine):
    """Apply ``combine(x[i], operand[j])`` where j is i's index at axes axis..axis+ndim-1."""
    operand = np.asarray(operand)
    if operand.ndim == 0:
        axis = 0
    axis %= max(x.ndim, 1)
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        j = i[axis : axis + operand.ndim]
        out[i] = combine(x[i], operand[j])
    return out


def mul(a, b):
    return a * b


def add(a, b):
    return a + b


def scale_reference(axis, bias_term):
    def ref(x, *operands):
        out = broadcast_reference(x, operands[0], axis, mul)
        if bias_term:
            out = broadcast_reference(out, operands[1], axis, add)
        return out

    return ref


def scale_reference_two_bottoms(axis, bias_term):
    def ref(x, s, *blobs):
        out = broadcast_reference(x, s, axis, mul)
        if bias_term:
            out = broadcast_reference(out, blobs[0], axis, add)
        return out

    return ref


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


FILLERS = 'filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'

SCALE_CASES = [
    # (bottom shape, axis, num_axes, expected parameter shape)
    ((2, 3, 4, 5), 1, 1, (3,)),
    ((2, 3, 4, 5), 0, 2, (2, 3)),
    ((2, 3, 4, 5), 2, 2, (4, 5)),
    ((2, 3, 4, 5), -1, 1, (5,)),
    ((2, 3, 4, 5), 1, -1, (3, 4, 5)),
    ((2, 3, 4, 5), 1, 0, ()),
    ((2, 3, 4, 5), 0, -1, (2, 3, 4, 5)),
    ((4, 6), 1, 1, (6,)),
    ((5,), 0, 1, (5,)),
]


@pytest.mark.parametrize("bias_term", [False, True])
@pytest.mark.parametrize(("shape", "axis", "num_axes", "param_shape"), SCALE_CASES)
def test_scale_learned(shape, axis, num_axes, param_shape, bias_term):
    text = (
        f'type: "Scale" scale_param {{ axis: {axis} num_axes: {num_axes} '
        f"bias_term: {str(bias_term).lower()} {FILLERS} }}"
    )
    layer, _, _ = check_layer(text, [data(shape)], reference=scale_reference(axis, bias_term))
    assert [b.shape for b in layer.blobs] == [param_shape] * (2 if bias_term else 1)


TWO_BOTTOM_CASES = [
    ((2, 3, 4, 5), (3,), 1),
    ((2, 3, 4, 5), (3, 4), 1),
    ((2, 3, 4, 5), (2, 3, 4, 5), 0),
    ((2, 3, 4, 5), (4, 5), -2),
    ((2, 3, 4, 5), (), 1),
    ((6, 4), (6,), 0),
]


@pytest.mark.parametrize("bias_term", [False, True])
@pytest.mark.parametrize(("shape", "scale_shape", "axis"), TWO_BOTTOM_CASES)
def test_scale_second_bottom(shape, scale_shape, axis, bias_term):
    text = (
        f'type: "Scale" scale_param {{ axis: {axis} bias_term: {str(bias_term).lower()} '
        'bias_filler { type: "gaussian" std: 1 } }'
    )
    layer, _, _ = check_layer(
        text,
        [data(shape, 1), data(scale_shape, 2)],
        reference=scale_reference_two_bottoms(axis, bias_term),
    )
    # no scale blob; the bias (if any) takes bottom[1]'s number of axes
    assert [b.shape for b in layer.blobs] == ([scale_shape] if bias_term else [])


def test_scale_defaults_are_identity_and_zero_bias():
    x = data((2, 3, 2))
    layer, bottom, top = build_layer('type: "Scale" scale_param { bias_term: true }', [x])
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(3))
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros(3))
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, x)
    layer, _, _ = build_layer('type: "Scale"', [x])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)


def _in_place(text, x, *extra):
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text(text))
        blob = Blob(x.shape)
        blob.data[...] = x
        others = []
        for array in extra:
            other = Blob(np.shape(array))
            other.data[...] = array
            others.append(other)
        layer.setup_layer([blob, *others], [blob])
    return layer, blob, others


@pytest.mark.parametrize(
    ("type_name", "text", "second"),
    [
        ("Scale", "bias_term: true", None),
        ("Scale", "", (3, 4)),
        ("Scale", "bias_term: true", (3,)),
        ("Bias", "", None),
        ("Bias", "", (3,)),
    ],
)
def test_in_place_matches_out_of_place(type_name, text, second):
    param_name = "scale_param" if type_name == "Scale" else "bias_param"
    fillers = FILLERS if type_name == "Scale" else 'filler { type: "gaussian" std: 1 }'
    layer_text = f'type: "{type_name}" {param_name} {{ {text} {fillers} }}'
    if type_name == "Scale" and second is not None:
        layer_text = layer_text.replace('filler { type: "gaussian" std: 1 } bias_', "bias_")
    x = data((2, 3, 4), seed=3)
    extra = [data(second, seed=4)] if second is not None else []
    dy = data(x.shape, seed=5)
    propagate = [True] * (1 + len(extra))

    layer, bottom, top = build_layer(layer_text, [x, *extra])
    twin, blob, others = _in_place(layer_text, x, *extra)
    for mine, theirs in zip(twin.blobs, layer.blobs, strict=True):
        mine.data[...] = theirs.data
    layer.forward(bottom, top)
    twin.forward([blob, *others], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-15)
    for b in layer.blobs + twin.blobs:
        b.diff[...] = 0
    top[0].diff[...] = dy
    layer.backward(top, propagate, bottom)
    blob.diff[...] = dy
    twin.backward([blob], propagate, [blob, *others])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-14)
    for mine, theirs in zip(others, bottom[1:], strict=True):
        np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-12)
    for mine, theirs in zip(twin.blobs, layer.blobs, strict=True):
        np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-12)


# ---- Bias ---------------------------------------------------------------------------
BIAS_CASES = [
    ((2, 3, 4, 5), 1, 1, (3,)),
    ((2, 3, 4, 5), 1, 2, (3, 4)),
    ((2, 3, 4, 5), -2, -1, (4, 5)),
    ((2, 3, 4, 5), 1, 0, ()),
    ((3, 7), 0, 2, (3, 7)),
]


@pytest.mark.parametrize(("shape", "axis", "num_axes", "param_shape"), BIAS_CASES)
def test_bias_learned(shape, axis, num_axes, param_shape):
    text = (
        f'type: "Bias" bias_param {{ axis: {axis} num_axes: {num_axes} '
        'filler { type: "gaussian" std: 1 } }'
    )
    layer, _, _ = check_layer(
        text, [data(shape, 6)], reference=lambda x, b: broadcast_reference(x, b, axis, add)
    )
    assert layer.blobs[0].shape == param_shape


@pytest.mark.parametrize(
    ("shape", "bias_shape", "axis"),
    [((2, 3, 4, 5), (3, 4), 1), ((2, 3, 4), (), 2), ((4, 5), (4, 5), 0)],
)
def test_bias_second_bottom(shape, bias_shape, axis):
    layer, _, _ = check_layer(
        f'type: "Bias" bias_param {{ axis: {axis} }}',
        [data(shape, 7), data(bias_shape, 8)],
        reference=lambda x, b: broadcast_reference(x, b, axis, add),
    )
    assert len(layer.blobs) == 0


def test_bias_default_filler_is_zero():
    layer, _, _ = build_layer('type: "Bias"', [data((2, 3))])
    np.testing.assert_array_equal(layer.blobs[0].data, np.zeros(3))


# ---- errors -------------------------------------------------------------------------
def test_scale_shape_mismatch_names_both_shapes():
    with pytest.raises(
        CaffeliteError,
        match=r"scale shape \(4,\) does not match bottom\[0\] "
        r"shape \(2, 3, 4\)",
    ):
        build_layer('type: "Scale"', [data((2, 3, 4)), data((4,))])


def test_bias_shape_mismatch_names_both_shapes():
    with pytest.raises(
        CaffeliteError,
        match=r"bias shape \(3, 5\) does not match bottom\[0\] "
        r"shape \(2, 3, 4\)",
    ):
        build_layer('type: "Bias"', [data((2, 3, 4)), data((3, 5))])


def test_operand_past_the_end():
    with pytest.raises(CaffeliteError, match=r"scale shape \(4, 2\) does not match"):
        build_layer('type: "Scale" scale_param { axis: 2 }', [data((2, 3, 4)), data((4, 2))])
    with pytest.raises(CaffeliteError, match=r"num_axes 3 starting at axis 1 extends past"):
        build_layer('type: "Scale" scale_param { num_axes: 3 }', [data((2, 3, 4))])


def test_bad_num_axes_and_axis():
    with pytest.raises(CaffeliteError, match="num_axes must be non-negative, or -1"):
        build_layer('type: "Bias" bias_param { num_axes: -2 }', [data((2, 3))])
    with pytest.raises(CaffeliteError, match=r"axis 3 is out of range .* \(2, 3\)"):
        build_layer('type: "Scale" scale_param { axis: 3 }', [data((2, 3))])


def test_shape_change_after_setup_is_checked():
    layer, bottom, top = build_layer('type: "Scale"', [data((2, 3, 4))])
    bottom[0].reshape(2, 5, 4)
    with pytest.raises(
        CaffeliteError,
        match=r"scale shape \(3,\) does not match bottom\[0\] "
        r"shape \(2, 5, 4\)",
    ):
        layer.reshape(bottom, top)


def test_loaded_blob_count_is_checked():
    param = layer_param_from_text('type: "Scale" scale_param { bias_term: true }')
    blob = param.blobs.add()
    blob.shape.dim.append(3)
    blob.data.extend([1.0, 2.0, 3.0])
    with pytest.raises(CaffeliteError, match=r"expects 2 parameter blob\(s\).*found 1"):
        create_layer(param).setup_layer([Blob(2, 3)], [Blob()])


@pytest.mark.parametrize("in_place", [False, True])
def test_scale_with_bias_rounds_as_multiply_then_add_in_float32(in_place):
    """The fused pass (one compiled loop) gives numpy's x * s + b to the bit."""
    x = data((2, 5, 3, 4), seed=6).astype(np.float32)
    text = f'type: "Scale" scale_param {{ bias_term: true {FILLERS} }}'
    with backend.precision(np.float32):
        layer = create_layer(layer_param_from_text(text))
        bottom = [Blob(x.shape)]
        top = bottom if in_place else [Blob(x.shape)]
        bottom[0].data[...] = x
        layer.setup_layer(bottom, top)
    layer.forward(bottom, top)
    s, b = (blob.data.reshape(1, 5, 1, 1) for blob in layer.blobs)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, x * s + b)
