"""The element-wise layers: one ONNX op each, or a short chain for Caffe's affine forms."""

from __future__ import annotations

from caffelite.onnx.export import register_exporter

_SIMPLE = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}


@register_exporter(*_SIMPLE)
def simple(ctx) -> None:
    ctx.node(_SIMPLE[ctx.param.type], ctx.bottoms, 0)


@register_exporter("Dropout")
def dropout(ctx) -> None:
    """Identity at test time, unless the net scales at test instead of at train."""
    factor = ctx.layer._factor()
    if factor == 1:
        ctx.node("Identity", ctx.bottoms, 0)
    else:
        ctx.node("Mul", [ctx.bottoms[0], ctx.scalar("scale", factor)], 0)


@register_exporter("ReLU")
def relu(ctx) -> None:
    slope = ctx.layer.negative_slope
    if slope == 0:
        ctx.node("Relu", ctx.bottoms, 0)
    else:
        ctx.node("LeakyRelu", ctx.bottoms, 0, alpha=slope)


@register_exporter("PReLU")
def prelu(ctx) -> None:
    rank = len(ctx.bottom_shapes[0])
    shape = (1,) if ctx.layer.channel_shared else (-1,) + (1,) * (rank - 2)
    ctx.node("PRelu", [ctx.bottoms[0], ctx.weight(0, "slope", shape=shape)], 0)


@register_exporter("ELU")
def elu(ctx) -> None:
    ctx.node("Elu", ctx.bottoms, 0, alpha=ctx.layer.alpha)


def _affine(ctx, x: str, scale: float, shift: float) -> str:
    """``shift + scale * x`` with the identity steps left out."""
    if scale != 1:
        x = ctx.node("Mul", [x, ctx.scalar("scale", scale)], "scaled")
    if shift != 0:
        x = ctx.node("Add", [x, ctx.scalar("shift", shift)], "shifted")
    return x


@register_exporter("Power")
def power(ctx) -> None:
    layer = ctx.layer
    base = _affine(ctx, ctx.bottoms[0], layer.scale, layer.shift)
    ctx.node("Pow", [base, ctx.scalar("power", layer.power)], 0)


@register_exporter("Exp")
def exp(ctx) -> None:
    """``outer * exp(inner * x)``, the layer's own factoring of ``base^(shift + scale x)``."""
    layer = ctx.layer
    y = ctx.node("Exp", [_affine(ctx, ctx.bottoms[0], layer.inner_scale, 0.0)], "exp")
    ctx.node("Mul", [y, ctx.scalar("outer", layer.outer_scale)], 0)


@register_exporter("Log")
def log(ctx) -> None:
    layer = ctx.layer
    y = ctx.node("Log", [_affine(ctx, ctx.bottoms[0], layer.scale, layer.shift)], "log")
    ctx.node("Mul", [y, ctx.scalar("base_scale", layer.base_scale)], 0)


@register_exporter("Clip")
def clip(ctx) -> None:
    layer = ctx.layer
    bounds = [ctx.scalar("min", layer.min), ctx.scalar("max", layer.max)]
    ctx.node("Clip", [ctx.bottoms[0], *bounds], 0)


@register_exporter("Swish")
def swish(ctx) -> None:
    x = ctx.bottoms[0]
    gate = ctx.node("Sigmoid", [_affine(ctx, x, ctx.layer.beta, 0.0)], "gate")
    ctx.node("Mul", [x, gate], 0)


@register_exporter("Threshold")
def threshold(ctx) -> None:
    above = ctx.node(
        "Greater", [ctx.bottoms[0], ctx.scalar("threshold", ctx.layer.threshold)], "above"
    )
    ctx.node("Cast", [above], 0, to=1)  # FLOAT
