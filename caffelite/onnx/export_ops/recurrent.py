"""RNN, LSTM and LSTMUnit: the recurrent layers as the elementary ops Caffe unrolls them to.

ONNX's own RNN and LSTM ops cannot express Caffe's ``cont`` input, which zeroes the
state inside a sequence wherever ``cont_t`` is 0 (ONNX resets only between calls), and
use another gate order. Caffe itself runs a recurrent layer as an unrolled net of
InnerProduct, Scale (the ``cont`` flush), Eltwise, TanH and LSTMUnit layers over its T
timesteps; caffelite builds the same net (``layer.net``), so the export writes that
net's layers with their own handlers: exact, and correct for any ``cont`` pattern.
Unrolling fixes T and N, so such a net exports with fixed shapes.

The initial state is zero (what a sequence start, ``cont_1 = 0``, gives), or the
``h_0``/``c_0`` inputs with ``expose_hidden``. A caffelite net that carries a previous
batch's final state into a batch starting with ``cont_1 = 1`` computes something an
exported graph, a function of its inputs only, does not.
"""

from __future__ import annotations

import numpy as np

from caffelite.onnx.export import export_layers, naming_writers, register_exporter


@register_exporter("RNN", "LSTM")
def recurrent(ctx) -> None:
    layer = ctx.layer
    inner = layer.net
    names = inner._blob_names
    sources = ["x", "cont", *(["x_static"] if layer.static_input else [])]
    states = layer.recurrent_input_names()
    given = dict(zip(sources, ctx.bottoms, strict=False))
    if layer.expose_hidden:
        given.update(zip(states, ctx.bottoms[len(sources) :], strict=True))
    else:
        zeros = np.zeros((1, layer.N, layer.num_output), np.float32)
        given.update({state: ctx.g.constant(ctx.tmp(state), zeros) for state in states})
    outputs = list(layer.output_names)
    if layer.expose_hidden:
        outputs += layer.recurrent_output_names()
    final = dict(zip(outputs, ctx.tops, strict=True))
    current = {}
    for layer_id, inner_layer in enumerate(inner.layers[: layer.last_layer + 1]):
        if inner_layer.type == "Input":
            for blob_id in inner.top_ids[layer_id]:
                current[blob_id] = given[names[blob_id]]
    writers = naming_writers(inner)

    def top_name(blob_id: int, layer_id: int) -> str:
        name = names[blob_id]
        if name in final and writers[blob_id] == layer_id:
            return final[name]
        return ctx.g.fresh(f"{ctx.name}/{name}")

    computed = [i for i in range(layer.last_layer + 1) if inner.layers[i].type != "Input"]
    export_layers(ctx.g, inner, computed, current, top_name, ctx.inputs)


@register_exporter("LSTMUnit")
def lstm_unit(ctx) -> None:
    """``c = cont * f * c_prev + i * g``, ``h = o * tanh(c)``; gates stacked (i, f, o, g)."""
    c_prev, gates, cont = ctx.bottoms
    hidden = ctx.bottom_shapes[0][2]
    sizes = ctx.g.int64s(ctx.tmp("sizes"), [hidden] * 4)
    outputs = [ctx.g.fresh(ctx.tmp(part)) for part in ("i", "f", "o", "g")]
    ctx.g.node("Split", [gates, sizes], outputs, name=ctx.tmp("Split"), axis=2)
    i, f, o = (
        ctx.node("Sigmoid", [value], f"{part}_act")
        for value, part in zip(outputs[:3], "ifo", strict=True)
    )
    g = ctx.node("Tanh", [outputs[3]], "g_act")
    cont = ctx.node("Unsqueeze", [cont, ctx.g.int64s(ctx.tmp("axis"), [2])], "cont")
    kept = ctx.node("Mul", [ctx.node("Mul", [f, c_prev], "f_c"), cont], "kept")
    c = ctx.node("Add", [kept, ctx.node("Mul", [i, g], "i_g")], 0)
    ctx.node("Mul", [ctx.node("Tanh", [c], "tanh_c"), o], 1)
