"""Element-wise activations with Caffe's formulas, parameters and defaults.

Each layer is a NeuronLayer: ``compute`` is forward, ``gradient`` is backward. The
math lives in small functions taking the array module ``xp``; ``y`` may be ``x``
and ``dx`` may be ``dy`` (in-place use), so every gradient first builds
``dy/dx`` in a scratch array and only then writes ``dx``.

Which values a gradient reads follows Caffe: Sigmoid, TanH, Exp and Swish use the
output; AbsVal, BNLL, Power, Log and Clip need the input, which the base class
keeps aside when the layer runs in place (Caffe would read the overwritten input
there; AbsVal refuses in-place use as Caffe does). ELU tests ``x > 0``, which the
output answers alike for ``alpha >= 0``; only a negative alpha keeps the input.
"""

from __future__ import annotations

import math

import numpy

from caffelite.layer import register_layer
from caffelite.layers.neuron import NeuronLayer

#: BNLL's backward clamps its input here before ``exp`` (Caffe's kBNLL_THRESHOLD)
BNLL_THRESHOLD = 50.0


# ---- Sigmoid ----------------------------------------------------------------------
def sigmoid_forward(xp, x, y) -> None:
    """``1 / (1 + exp(-x))`` written as ``0.5 tanh(x/2) + 0.5``: no overflow (Caffe's form)."""
    xp.multiply(x, 0.5, out=y)
    xp.tanh(y, out=y)
    y *= 0.5
    y += 0.5


def sigmoid_backward(xp, y, dy, dx, tmp) -> None:
    """``dx = dy * y * (1 - y)`` from the output alone."""
    xp.subtract(1, y, out=tmp)
    tmp *= y
    xp.multiply(dy, tmp, out=dx)


@register_layer("Sigmoid")
class SigmoidLayer(NeuronLayer):
    def compute(self, x, y):
        sigmoid_forward(self.xp, x, y)

    def gradient(self, x, y, dy, dx):
        sigmoid_backward(self.xp, y, dy, dx, self.buffer("tmp", y.shape, y.dtype))


# ---- TanH -------------------------------------------------------------------------
def tanh_backward(xp, y, dy, dx, tmp) -> None:
    """``dx = dy * (1 - y^2)`` from the output alone."""
    xp.multiply(y, y, out=tmp)
    xp.subtract(1, tmp, out=tmp)
    xp.multiply(dy, tmp, out=dx)


@register_layer("TanH")
class TanHLayer(NeuronLayer):
    def compute(self, x, y):
        self.xp.tanh(x, out=y)

    def gradient(self, x, y, dy, dx):
        tanh_backward(self.xp, y, dy, dx, self.buffer("tmp", y.shape, y.dtype))


# ---- AbsVal -----------------------------------------------------------------------
@register_layer("AbsVal")
class AbsValLayer(NeuronLayer):
    """``|x|``; the gradient is ``sign(x)`` with ``sign(0) = 0``. Never in place (as Caffe)."""

    allows_in_place = False

    def compute(self, x, y):
        self.xp.abs(x, out=y)

    def gradient(self, x, y, dy, dx):
        tmp = self.buffer("tmp", x.shape, x.dtype)
        self.xp.sign(x, out=tmp)
        self.xp.multiply(dy, tmp, out=dx)


# ---- BNLL -------------------------------------------------------------------------
def bnll_forward(xp, x, y, tmp) -> None:
    """``log(1 + exp(x))`` computed as ``max(x, 0) + log1p(exp(-|x|))`` (never overflows)."""
    xp.abs(x, out=tmp)
    xp.negative(tmp, out=tmp)
    xp.exp(tmp, out=tmp)
    xp.log1p(tmp, out=tmp)
    xp.maximum(x, 0, out=y)
    y += tmp


def bnll_backward(xp, x, dy, dx, tmp, tmp2) -> None:
    """``dx = dy * e / (e + 1)`` with ``e = exp(min(x, 50))``, Caffe's clamp."""
    xp.minimum(x, BNLL_THRESHOLD, out=tmp)
    xp.exp(tmp, out=tmp)
    xp.add(tmp, 1, out=tmp2)
    tmp /= tmp2
    xp.multiply(dy, tmp, out=dx)


@register_layer("BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood, ``log(1 + exp(x))`` (softplus)."""

    keeps_input = True

    def compute(self, x, y):
        bnll_forward(self.xp, x, y, self.buffer("tmp", x.shape, x.dtype))

    def gradient(self, x, y, dy, dx):
        tmp = self.buffer("tmp", x.shape, x.dtype)
        bnll_backward(self.xp, x, dy, dx, tmp, self.buffer("tmp2", x.shape, x.dtype))


# ---- ELU --------------------------------------------------------------------------
def elu_forward(xp, x, y, alpha: float, tmp) -> None:
    """``max(x, 0) + alpha * (exp(min(x, 0)) - 1)``."""
    xp.minimum(x, 0, out=tmp)
    xp.expm1(tmp, out=tmp)
    tmp *= alpha
    xp.maximum(x, 0, out=y)
    y += tmp


def elu_backward(xp, x, y, dy, dx, alpha: float, tmp) -> None:
    """``dx = dy`` where ``x > 0``, else ``dy * (alpha + y)`` (Caffe's form via the output)."""
    xp.add(y, alpha, out=tmp)
    tmp[x > 0] = 1
    xp.multiply(dy, tmp, out=dx)


@register_layer("ELU")
class ELULayer(NeuronLayer):
    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.alpha = float(self.layer_param.elu_param.alpha)
        # In place, Caffe tests ``x > 0`` on the output; that is the same test only
        # for alpha >= 0, so keep the input aside otherwise.
        self.keeps_input = self.alpha < 0

    def compute(self, x, y):
        elu_forward(self.xp, x, y, self.alpha, self.buffer("tmp", x.shape, x.dtype))

    def gradient(self, x, y, dy, dx):
        elu_backward(self.xp, x, y, dy, dx, self.alpha, self.buffer("tmp", x.shape, x.dtype))


# ---- Power ------------------------------------------------------------------------
def _host_power(base: float, exponent: float) -> float:
    with numpy.errstate(all="ignore"):
        return float(numpy.power(numpy.float64(base), exponent))


def power_forward(xp, x, y, power: float, scale: float, shift: float) -> None:
    """``(shift + scale * x) ^ power``; a constant when ``power * scale == 0``."""
    if power * scale == 0:
        y[...] = 1.0 if power == 0 else _host_power(shift, power)
        return
    xp.multiply(x, scale, out=y)
    if shift != 0:
        y += shift
    if power != 1:
        xp.power(y, power, out=y)


def power_backward(xp, x, dy, dx, power: float, scale: float, shift: float, tmp) -> None:
    """``dx = dy * power * scale * (shift + scale * x) ^ (power - 1)``.

    Caffe writes the general case as ``power * scale * y / (shift + scale * x)``; the
    direct form is the same derivative and stays finite where that base is 0.
    """
    diff_scale = power * scale
    if diff_scale == 0:
        dx[...] = 0
        return
    if power == 1:
        xp.multiply(dy, diff_scale, out=dx)
        return
    xp.multiply(x, scale, out=tmp)
    if shift != 0:
        tmp += shift
    if power != 2:
        xp.power(tmp, power - 1, out=tmp)
    tmp *= diff_scale
    xp.multiply(dy, tmp, out=dx)


@register_layer("Power")
class PowerLayer(NeuronLayer):
    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.keeps_input = self.power * self.scale != 0 and self.power != 1

    def compute(self, x, y):
        power_forward(self.xp, x, y, self.power, self.scale, self.shift)

    def gradient(self, x, y, dy, dx):
        tmp = self.buffer("tmp", x.shape, x.dtype)
        power_backward(self.xp, x, dy, dx, self.power, self.scale, self.shift, tmp)


# ---- Exp --------------------------------------------------------------------------
@register_layer("Exp")
class ExpLayer(NeuronLayer):
    """``base ^ (shift + scale * x)``; ``base = -1`` (the default) means e.

    Computed as ``outer * exp(inner * x)`` with ``inner = ln(base) * scale`` and
    ``outer = base ^ shift``, so the gradient is ``dy * y * inner``.
    """

    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        if base != -1 and not base > 0:
            raise self.error(f"exp_param.base must be strictly positive (or -1 for e), got {base}")
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner_scale = log_base * scale
        if shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1 else base**shift

    def compute(self, x, y):
        xp = self.xp
        if self.inner_scale == 1:
            xp.exp(x, out=y)
        else:
            xp.multiply(x, self.inner_scale, out=y)
            xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def gradient(self, x, y, dy, dx):
        tmp = self.buffer("tmp", y.shape, y.dtype)
        self.xp.multiply(y, self.inner_scale, out=tmp)
        self.xp.multiply(dy, tmp, out=dx)


# ---- Log --------------------------------------------------------------------------
@register_layer("Log")
class LogLayer(NeuronLayer):
    """``log_base(shift + scale * x)``; ``base = -1`` (the default) means e."""

    keeps_input = True

    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.layer_param.log_param
        base = float(p.base)
        if base != -1 and not base > 0:
            raise self.error(f"log_param.base must be strictly positive (or -1 for e), got {base}")
        if base == 1:
            raise self.error("log_param.base is 1: log(1) = 0 cannot be a base")
        log_base = 1.0 if base == -1 else math.log(base)
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)
        self.backward_scale = self.scale / log_base

    def _affine(self, x, out):
        self.xp.multiply(x, self.scale, out=out)
        if self.shift != 0:
            out += self.shift

    def compute(self, x, y):
        self._affine(x, y)
        self.xp.log(y, out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def gradient(self, x, y, dy, dx):
        tmp = self.buffer("tmp", x.shape, x.dtype)
        self._affine(x, tmp)
        self.xp.divide(self.backward_scale, tmp, out=tmp)
        self.xp.multiply(dy, tmp, out=dx)


# ---- Threshold --------------------------------------------------------------------
@register_layer("Threshold")
class ThresholdLayer(NeuronLayer):
    """``1`` where ``x > threshold``, else ``0``; it has no gradient (Caffe: not implemented)."""

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def compute(self, x, y):
        above = self.buffer("above", x.shape, bool)
        self.xp.greater(x, self.threshold, out=above)
        y[...] = above

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error(
                "has no backward (a step function has no useful gradient, and Caffe does "
                "not implement one); set propagate_down: false for its bottom"
            )


# ---- Clip -------------------------------------------------------------------------
@register_layer("Clip")
class ClipLayer(NeuronLayer):
    """``max(min, min(x, max))``; the gradient passes where ``min <= x <= max``."""

    keeps_input = True

    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.layer_param.clip_param
        missing = [name for name in ("min", "max") if not p.HasField(name)]
        if missing:
            raise self.error(f"clip_param needs {' and '.join(missing)} (required fields)")
        self.min, self.max = float(p.min), float(p.max)

    def compute(self, x, y):
        self.xp.clip(x, self.min, self.max, out=y)

    def gradient(self, x, y, dy, dx):
        xp = self.xp
        inside = self.buffer("inside", x.shape, bool)
        below_max = self.buffer("below_max", x.shape, bool)
        xp.greater_equal(x, self.min, out=inside)
        xp.less_equal(x, self.max, out=below_max)
        inside &= below_max
        xp.multiply(dy, inside, out=dx)


# ---- Swish ------------------------------------------------------------------------
@register_layer("Swish")
class SwishLayer(NeuronLayer):
    """``x * sigmoid(beta * x)``; the sigmoid is kept for the gradient, as Caffe does.

    ``dy/dx = beta * y + s * (1 - beta * y)`` with ``s = sigmoid(beta x)``.
    """

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.beta = float(self.layer_param.swish_param.beta)

    def compute(self, x, y):
        s = self.buffer("sigmoid", x.shape, x.dtype)
        self.xp.multiply(x, self.beta, out=s)
        sigmoid_forward(self.xp, s, s)
        self.xp.multiply(x, s, out=y)

    def gradient(self, x, y, dy, dx):
        s = self.buffer("sigmoid", y.shape, y.dtype)
        tmp = self.buffer("tmp", y.shape, y.dtype)
        by = self.buffer("beta_y", y.shape, y.dtype)
        self.xp.multiply(y, self.beta, out=by)
        self.xp.subtract(1, by, out=tmp)
        tmp *= s
        tmp += by
        self.xp.multiply(dy, tmp, out=dx)
