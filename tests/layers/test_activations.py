"""Element-wise activations: forward against per-element math references, gradients,
in-place use, Caffe's special cases and the configuration errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def f32(value) -> float:
    """The value a float proto field really holds."""
    return float(np.float32(value))


def elementwise(fn):
    """A reference that applies a scalar Python function to every element."""

    def ref(x):
        out = np.empty_like(x)
        for i in np.ndindex(x.shape):
            out[i] = fn(float(x[i]))
        return out

    return ref


def away_from(x, points, margin=0.05, replacement=0.37):
    """Move values within ``margin`` of any kink in ``points`` to ``replacement``."""
    for p in points:
        x = np.where(np.abs(x - p) < margin, replacement, x)
    return x


def uniform(shape, low=-2.0, high=2.0, seed=0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


SHAPES = [(2, 3, 4, 5), (6,), (3, 7)]


# ---- Sigmoid, TanH, AbsVal, BNLL --------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid(shape):
    check_layer(
        'type: "Sigmoid"',
        [uniform(shape, -4, 4)],
        reference=elementwise(lambda v: 1.0 / (1.0 + math.exp(-v))),
    )


def test_sigmoid_saturates_without_overflow():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    layer, bottom, top = build_layer('type: "Sigmoid"', [x], dtype=np.float32)
    with np.errstate(all="raise"):
        layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
def test_tanh(shape):
    check_layer('type: "TanH"', [uniform(shape, -3, 3)], reference=elementwise(math.tanh))


@pytest.mark.parametrize("shape", SHAPES)
def test_absval(shape):
    x = away_from(uniform(shape), [0.0])
    check_layer('type: "AbsVal"', [x], reference=elementwise(abs), kink=0.0, kink_range=1e-3)


def test_absval_gradient_at_zero_is_zero():
    layer, bottom, top = build_layer('type: "AbsVal"', [np.array([-2.0, 0.0, 3.0])])
    layer.forward(bottom, top)
    top[0].diff[...] = [5.0, 5.0, 5.0]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [-5.0, 0.0, 5.0])


def test_absval_refuses_in_place():
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text('type: "AbsVal"'))
        blob = Blob(3)
        with pytest.raises(CaffeliteError, match="does not allow in-place"):
            layer.setup_layer([blob], [blob])


def _bnll(v):
    return v + math.log(1 + math.exp(-v)) if v > 0 else math.log(1 + math.exp(v))


@pytest.mark.parametrize("shape", SHAPES)
def test_bnll(shape):
    check_layer('type: "BNLL"', [uniform(shape, -4, 4)], reference=elementwise(_bnll))


def test_bnll_large_inputs_and_backward_clamp():
    x = np.array([-700.0, -60.0, 60.0, 700.0])
    layer, bottom, top = build_layer('type: "BNLL"', [x])
    with np.errstate(over="raise"):
        layer.forward(bottom, top)
        np.testing.assert_allclose(
            top[0].data, [0.0, math.exp(-60), 60.0, 700.0], rtol=1e-12, atol=1e-300
        )
        top[0].diff[...] = 1.0
        layer.backward(top, [True], bottom)
    # Caffe clamps x at 50 before exp: e / (e + 1) with e = exp(50)
    e50 = math.exp(50.0)
    np.testing.assert_allclose(
        bottom[0].diff,
        [0.0, math.exp(-60), e50 / (e50 + 1), e50 / (e50 + 1)],
        rtol=1e-12,
        atol=1e-300,
    )


# ---- ELU --------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.5, -0.5])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (10,)])
def test_elu(alpha, shape):
    a = f32(alpha)
    x = away_from(uniform(shape), [0.0])
    check_layer(
        f'type: "ELU" elu_param {{ alpha: {alpha} }}',
        [x],
        reference=elementwise(lambda v: v if v > 0 else a * (math.exp(v) - 1)),
        kink=0.0,
        kink_range=1e-3,
    )


def test_elu_default_alpha_is_one():
    layer, bottom, top = build_layer('type: "ELU"', [np.array([-1.0, 2.0])])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, [math.exp(-1) - 1, 2.0], rtol=1e-15)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    # Caffe: dy * (alpha + y) where x <= 0
    np.testing.assert_allclose(bottom[0].diff, [math.exp(-1), 1.0], rtol=1e-15)


# ---- Power ------------------------------------------------------------------------
POWER_CASES = [
    # (power, scale, shift, low, high): inputs keep the base positive for fractional powers
    (1.0, 1.0, 0.0, -2, 2),
    (1.0, 2.5, -1.0, -2, 2),
    (2.0, 1.0, 0.0, -2, 2),
    (2.0, 0.5, 1.5, -2, 2),
    (3.0, -0.5, 0.25, -2, 2),
    (0.5, 1.0, 0.0, 0.3, 2),
    (-1.5, 2.0, 1.0, 0.1, 2),
    (0.37, 0.8, 2.0, -1, 2),
    (-2.0, 1.0, 0.0, 0.5, 2),
]


@pytest.mark.parametrize(("power", "scale", "shift", "low", "high"), POWER_CASES)
def test_power(power, scale, shift, low, high):
    p, a, b = f32(power), f32(scale), f32(shift)
    check_layer(
        f'type: "Power" power_param {{ power: {power} scale: {scale} shift: {shift} }}',
        [uniform((2, 3, 4), low, high, seed=3)],
        reference=elementwise(lambda v: (b + a * v) ** p),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("power: 0 scale: 3 shift: 5", 1.0),
        ("power: 3 scale: 0 shift: 2", 8.0),
        ("power: 0 scale: 0", 1.0),
    ],
)
def test_power_constant_cases_have_zero_gradient(text, value):
    x = uniform((3, 4), seed=4)
    check_layer(
        f'type: "Power" power_param {{ {text} }}', [x], reference=lambda x: np.full_like(x, value)
    )
    layer, bottom, top = build_layer(f'type: "Power" power_param {{ {text} }}', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 9.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)


def test_power_defaults_are_identity():
    x = uniform((5,), seed=5)
    check_layer('type: "Power"', [x], reference=lambda x: x.copy())


# ---- Exp --------------------------------------------------------------------------
EXP_CASES = [
    ("", math.e, 1.0, 0.0),
    ("base: 2 scale: 0.5 shift: 1", 2.0, 0.5, 1.0),
    ("base: -1 scale: 2 shift: 0.5", math.e, 2.0, 0.5),
    ("base: 0.5 scale: -1 shift: -2", 0.5, -1.0, -2.0),
    ("base: 10 scale: 0.3", 10.0, 0.3, 0.0),
]


@pytest.mark.parametrize(("text", "base", "scale", "shift"), EXP_CASES)
def test_exp(text, base, scale, shift):
    base = base if base == math.e else f32(base)
    a, b = f32(scale), f32(shift)
    check_layer(
        f'type: "Exp" exp_param {{ {text} }}',
        [uniform((2, 3, 4), seed=6)],
        reference=elementwise(lambda v: base ** (b + a * v)),
    )


@pytest.mark.parametrize("base", [0, -2])
def test_exp_rejects_non_positive_base(base):
    with pytest.raises(CaffeliteError, match="base must be strictly positive"):
        build_layer(f'type: "Exp" exp_param {{ base: {base} }}', [np.ones(3)])


# ---- Log --------------------------------------------------------------------------
LOG_CASES = [
    ("", math.e, 1.0, 0.0, 0.2, 3.0),
    ("base: 10 scale: 2 shift: 1", 10.0, 2.0, 1.0, 0.1, 3.0),
    ("base: -1 scale: 0.5 shift: 2", math.e, 0.5, 2.0, -2.0, 2.0),
    ("base: 2 scale: -1 shift: 3", 2.0, -1.0, 3.0, -2.0, 2.5),
    ("base: 0.5", 0.5, 1.0, 0.0, 0.2, 3.0),
]


@pytest.mark.parametrize(("text", "base", "scale", "shift", "low", "high"), LOG_CASES)
def test_log(text, base, scale, shift, low, high):
    base = base if base == math.e else f32(base)
    a, b = f32(scale), f32(shift)
    check_layer(
        f'type: "Log" log_param {{ {text} }}',
        [uniform((2, 3, 4), low, high, seed=7)],
        reference=elementwise(lambda v: math.log(b + a * v) / math.log(base)),
    )


@pytest.mark.parametrize(
    ("base", "message"),
    [(0, "strictly positive"), (-3, "strictly positive"), (1, "cannot be a base")],
)
def test_log_rejects_bad_base(base, message):
    with pytest.raises(CaffeliteError, match=message):
        build_layer(f'type: "Log" log_param {{ base: {base} }}', [np.ones(3)])


# ---- Threshold --------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.0, 0.3, -1.2])
def test_threshold_forward(threshold):
    t = f32(threshold)
    x = uniform((2, 3, 4, 5), seed=8)
    x[0, 0, 0, :2] = t  # exactly at the threshold gives 0 (strict comparison)
    check_layer(
        f'type: "Threshold" threshold_param {{ threshold: {threshold} }}',
        [x],
        reference=elementwise(lambda v: 1.0 if v > t else 0.0),
        gradient=False,
    )


def test_threshold_backward_raises_only_when_asked():
    layer, bottom, top = build_layer('type: "Threshold"', [uniform((4,), seed=9)])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)  # nothing to do, no error
    with pytest.raises(CaffeliteError, match="has no backward"):
        layer.backward(top, [True], bottom)


# ---- Clip -------------------------------------------------------------------------
@pytest.mark.parametrize(("lo", "hi"), [(-1.0, 1.0), (0.0, 6.0), (-0.5, 0.25)])
def test_clip(lo, hi):
    a, b = f32(lo), f32(hi)
    x = away_from(uniform((2, 3, 4, 5), -3, 7, seed=10), [a, b], replacement=(a + b) / 2)
    check_layer(
        f'type: "Clip" clip_param {{ min: {lo} max: {hi} }}',
        [x],
        reference=elementwise(lambda v: max(a, min(v, b))),
    )


def test_clip_gradient_passes_at_both_bounds():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    layer, bottom, top = build_layer('type: "Clip" clip_param { min: -1 max: 1 }', [x])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [-1.0, -1.0, 0.0, 1.0, 1.0])
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0.0, 3.0, 3.0, 3.0, 0.0])


@pytest.mark.parametrize(
    ("text", "missing"), [("", "min and max"), ("min: 0", "max"), ("max: 1", "min")]
)
def test_clip_requires_min_and_max(text, missing):
    with pytest.raises(CaffeliteError, match=f"clip_param needs {missing}"):
        build_layer(f'type: "Clip" clip_param {{ {text} }}', [np.ones(3)])


# ---- Swish ------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, -0.7])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (9,)])
def test_swish(beta, shape):
    b = f32(beta)
    check_layer(
        f'type: "Swish" swish_param {{ beta: {beta} }}',
        [uniform(shape, -4, 4, seed=11)],
        reference=elementwise(lambda v: v / (1.0 + math.exp(-b * v))),
    )


def test_swish_default_beta_is_one():
    x = np.array([-1.0, 0.5, 2.0])
    layer, bottom, top = build_layer('type: "Swish"', [x])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / (1 + np.exp(-x)), rtol=1e-15)


# ---- in-place use and bookkeeping ---------------------------------------------------
IN_PLACE_CASES = [
    ('type: "Sigmoid"', (-3, 3)),
    ('type: "TanH"', (-3, 3)),
    ('type: "BNLL"', (-3, 3)),
    ('type: "ELU" elu_param { alpha: 0.7 }', (-2, 2)),
    ('type: "ELU" elu_param { alpha: -0.4 }', (-2, 2)),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', (-2, 2)),
    ('type: "Power" power_param { power: 0.5 scale: 2 }', (0.1, 2)),
    ('type: "Power" power_param { power: 1 scale: -3 shift: 1 }', (-2, 2)),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', (-2, 2)),
    ('type: "Log" log_param { base: 2 scale: 0.5 shift: 3 }', (-2, 2)),
    ('type: "Clip" clip_param { min: -0.5 max: 0.5 }', (-2, 2)),
    ('type: "Swish" swish_param { beta: 1.5 }', (-3, 3)),
    ('type: "Threshold" threshold_param { threshold: 0.1 }', (-2, 2)),
]


@pytest.mark.parametrize(("text", "bounds"), IN_PLACE_CASES)
def test_in_place_matches_out_of_place(text, bounds):
    x = away_from(uniform((2, 3, 4), *bounds, seed=12), [0.0, -0.5, 0.5])
    dy = np.random.default_rng(13).standard_normal(x.shape)
    layer, bottom, top = build_layer(text, [x])
    layer.forward(bottom, top)
    with backend.precision(np.float64):
        in_place = create_layer(layer_param_from_text(text))
        blob = Blob(x.shape)
        blob.data[...] = x
        in_place.setup_layer([blob], [blob])
    in_place.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, top[0].data)
    if "Threshold" in text:
        return
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    blob.diff[...] = dy
    in_place.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "type_name", ["Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Power", "Exp", "Swish", "Threshold"]
)
def test_float32_keeps_dtype_and_shape_follows_bottom(type_name):
    layer, bottom, top = build_layer(
        f'type: "{type_name}"', [uniform((2, 3), seed=14)], dtype=np.float32
    )
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    bottom[0].reshape(4, 5)
    bottom[0].data[...] = uniform((4, 5), seed=15)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (4, 5)
    assert top[0].data.dtype == np.float32


def test_no_propagate_leaves_bottom_diff():
    layer, bottom, top = build_layer('type: "Sigmoid"', [uniform((4,), seed=16)])
    layer.forward(bottom, top)
    bottom[0].diff[...] = 7.0
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)


def test_blob_counts_are_checked():
    with pytest.raises(CaffeliteError, match="exactly 1 bottom"):
        build_layer('type: "TanH"', [np.ones(3), np.ones(3)])
