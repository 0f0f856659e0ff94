"""caffelite Net -> ONNX model: a registry of one small handler per Caffe layer type.

A handler receives a ``LayerContext`` (the layer, its parsed parameters, the ONNX values
holding its bottoms, the Caffe shapes of bottoms and tops, the names its tops must get)
and adds the nodes that compute exactly what the Caffe layer computes. The batch axis is
left symbolic (``N``) by default, so handlers never bake the batch size into a shape: a
shape they write keeps axis 0 with Reshape's ``0`` ("copy this dimension").

``register_exporter("Type")`` adds a handler (a type is registered once); a layer whose
type has none is refused with its name and type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.onnx.graph import DEFAULT_OPSET, MIN_OPSET, GraphBuilder, require

_HANDLERS: dict[str, Callable] = {}

#: Layers whose blobs are T x N x ...: the batch is axis 1, and the recurrent ones are
#: unrolled over a fixed T, so a net holding one exports with fixed shapes.
TIME_MAJOR = frozenset({"RNN", "LSTM", "LSTMUnit"})

logger = logging.getLogger("caffelite")


def register_exporter(*layer_types: str):
    """Decorator: ``fn(ctx)`` exports layers of these Caffe types."""

    def decorate(fn):
        for layer_type in layer_types:
            if layer_type in _HANDLERS:
                raise CaffeliteError(f"an ONNX exporter for {layer_type!r} is already registered")
            _HANDLERS[layer_type] = fn
        return fn

    return decorate


def exportable_types() -> list[str]:
    _load_handlers()
    return sorted(_HANDLERS)


def _load_handlers() -> None:
    import caffelite.onnx.export_ops  # noqa: F401  (registers the built-in handlers)


@dataclass
class LayerContext:
    """What a handler sees of one layer."""

    g: GraphBuilder
    layer: object
    bottoms: list[str]
    bottom_shapes: list[tuple[int, ...]]
    top_shapes: list[tuple[int, ...]]
    tops: list[str]
    inputs: list

    @property
    def name(self) -> str:
        return self.layer.layer_param.name

    @property
    def param(self):
        return self.layer.layer_param

    def tmp(self, suffix: str) -> str:
        """A hint for an intermediate value of this layer."""
        return f"{self.name}/{suffix}"

    def weight(self, index: int, suffix: str | None = None, shape=None) -> str:
        """The layer's parameter blob ``index`` as an initializer (float32)."""
        data = np.asarray(self.layer.blobs[index].data, dtype=np.float32)
        if shape is not None:
            data = data.reshape(shape)
        return self.g.constant(f"{self.name}/{suffix or f'blob{index}'}", data)

    def scalar(self, suffix: str, value: float) -> str:
        return self.g.constant(f"{self.name}/{suffix}", value)

    def node(self, op: str, inputs: list[str], out: int | str, **attrs) -> str:
        """A node writing top ``out`` (an int) or an intermediate named after ``out``."""
        outputs = [self.tops[out]] if isinstance(out, int) else self.tmp(out)
        return self.g.node(op, inputs, outputs, name=self.tmp(op), **attrs)

    def reduce(self, op: str, x: str, axes, out: int | str, keepdims: int = 1) -> str:
        outputs = [self.tops[out]] if isinstance(out, int) else self.tmp(out)
        return self.g.reduce(op, x, axes, outputs, keepdims=keepdims, name=self.tmp(op))

    def shape_keeping_batch(self, shape) -> list[int]:
        """``shape`` for Reshape with axis 0 copied from the input (0), so the batch stays
        symbolic."""
        return [0, *shape[1:]]

    def error(self, message: str) -> CaffeliteError:
        return CaffeliteError(
            f"layer {self.name!r} (type {self.param.type}): cannot export to ONNX: {message}"
        )


def export(
    net, path=None, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, check: bool = True
):
    """Write ``net`` (its current weights and input shapes) as an ONNX model at ``path``.

    Returns the ModelProto. With ``dynamic_batch`` the inputs' axis 0 is the symbolic ``N``.
    ``check`` runs ``onnx.checker`` with full checks (shape inference included).
    """
    onnx = require("onnx")
    _load_handlers()
    if opset < MIN_OPSET:
        raise CaffeliteError(f"ONNX export needs opset {MIN_OPSET} or newer, got {opset}")
    if opset > onnx.defs.onnx_opset_version():
        raise CaffeliteError(
            f"opset {opset} is newer than this onnx package knows "
            f"({onnx.defs.onnx_opset_version()})"
        )
    g = GraphBuilder(opset)
    names = net._blob_names
    last_writer = naming_writers(net)
    for blob_id in set(last_writer):
        g.reserve(names[blob_id])

    def top_name(blob_id: int, layer_id: int) -> str:
        if last_writer[blob_id] == layer_id:
            return names[blob_id]
        return g.fresh(f"{names[blob_id]}@{layer_id}")

    inputs: list = []
    export_layers(g, net, range(len(net.layers)), {}, top_name, inputs)
    time_major = sorted({layer.type for layer in net.layers} & TIME_MAJOR)
    if dynamic_batch and time_major:
        logger.warning(
            "net %r has %s layers (T x N blobs, the batch on axis 1, unrolled over T): "
            "exporting with the prototxt's fixed shapes, not a dynamic batch",
            net.name,
            "/".join(time_major),
        )
        dynamic_batch = False
    if not inputs:
        raise CaffeliteError(
            f"net {net.name!r} has no Input layer: export a deploy net (with an Input layer "
            "giving the input shape), not a train net with data layers"
        )
    for value in inputs:
        if dynamic_batch:
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    outputs = [
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in net.outputs
    ]
    graph = onnx.helper.make_graph(
        g.nodes, net.name or "caffelite", inputs, outputs, initializer=g.initializers
    )
    model = onnx.helper.make_model(
        graph,
        producer_name="caffelite",
        opset_imports=[onnx.helper.make_opsetid("", opset)],
    )
    model.ir_version = min(model.ir_version, _max_ir_version(opset))
    model = _with_output_shapes(model)
    if check:
        onnx.checker.check_model(model, full_check=True)
    if path is not None:
        _save_atomic(model, Path(path))
    return model


def naming_writers(net) -> dict[int, int]:
    """Which layer's top carries each blob's own name: an Input's (graph inputs keep their
    names), else the blob's last writer (so outputs keep theirs)."""
    writers: dict[int, int] = {}
    for layer_id, top_ids in enumerate(net.top_ids):
        for blob_id in top_ids:
            first = writers.get(blob_id)
            if first is None or net.layers[first].layer_param.type != "Input":
                writers[blob_id] = layer_id
    return writers


def export_layers(g, net, layer_ids, current: dict, top_name, inputs: list) -> None:
    """Add the nodes of ``net``'s layers ``layer_ids`` to ``g``.

    ``current`` maps blob ids to the ONNX values holding them (updated as layers write);
    ``top_name(blob_id, layer_id)`` names a layer's top; Input layers add to ``inputs``.
    Recurrent layers call this for their unrolled nets.
    """
    for layer_id in layer_ids:
        layer = net.layers[layer_id]
        handler = _HANDLERS.get(layer.layer_param.type)
        if handler is None:
            raise CaffeliteError(
                f"layer {layer.layer_param.name!r} (type {layer.layer_param.type}) has no ONNX "
                f"equivalent; exportable types: {', '.join(sorted(_HANDLERS))}"
            )
        top_ids = net.top_ids[layer_id]
        ctx = LayerContext(
            g=g,
            layer=layer,
            bottoms=[current[b] for b in net.bottom_ids[layer_id]],
            bottom_shapes=[tuple(b.shape) for b in net.bottom_vecs[layer_id]],
            top_shapes=[tuple(t.shape) for t in net.top_vecs[layer_id]],
            tops=[top_name(blob_id, layer_id) for blob_id in top_ids],
            inputs=inputs,
        )
        handler(ctx)
        for blob_id, value in zip(top_ids, ctx.tops, strict=True):
            current[blob_id] = value


def _max_ir_version(opset: int) -> int:
    """The IR version that goes with ``opset`` (onnx's table), so older runtimes load it."""
    import onnx

    for _, ir_version, ai_onnx, *_ in onnx.helper.VERSION_TABLE:
        if ai_onnx >= opset:
            return int(ir_version)
    return onnx.IR_VERSION


def _with_output_shapes(model):
    """Declare the outputs' inferred shapes (symbolic batch included)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    by_name = {v.name: v for v in inferred.graph.value_info}
    by_name.update({v.name: v for v in inferred.graph.output})
    for output in model.graph.output:
        found = by_name.get(output.name)
        if found is not None and found.type.tensor_type.HasField("shape"):
            output.type.CopyFrom(found.type)
    return model


def _save_atomic(model, path: Path) -> None:
    from caffelite.prototxt import write_binary_atomic

    write_binary_atomic(path, model)


def export_file(model_path, weights_path, output, opset: int = DEFAULT_OPSET, dynamic_batch=True):
    """``caffelite export``: a deploy prototxt and its weights to an ONNX file."""
    from caffelite.layer import TEST
    from caffelite.net import Net

    net = Net(str(model_path), TEST, weights=str(weights_path) if weights_path else None)
    return export(net, output, opset=opset, dynamic_batch=dynamic_batch)
