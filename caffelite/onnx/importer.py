"""ONNX model -> Caffe NetParameter (prototxt) and weights (caffemodel).

The graph is read in its (topological) node order. Values computable from constants --
initializers, ``Constant`` nodes, and ``Shape`` of a value whose shape is known (the input
shapes are made concrete first) -- are folded with ONNX's reference evaluator, so the
shape arithmetic other exporters emit (``Shape -> Gather -> Concat -> Reshape``) becomes a
plain constant. Every other node goes to a handler registered for its op type, which
appends Caffe layers; a handler may take over the node after it (a pool absorbs the
``Pad`` before it, an AveragePool the divisor correction after it). Layers whose tops
nobody reads are dropped at the end, so patterns that recompute a value leave no stray
outputs. The first node that no handler can express is an error naming it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.onnx.graph import require, unique_name

_HANDLERS: dict[str, Callable] = {}


def register_importer(*op_types: str):
    """Decorator: ``fn(ctx)`` turns ONNX nodes of these op types into Caffe layers."""

    def decorate(fn):
        for op in op_types:
            if op in _HANDLERS:
                raise CaffeliteError(f"an ONNX importer for {op!r} is already registered")
            _HANDLERS[op] = fn
        return fn

    return decorate


def _load_handlers() -> None:
    import caffelite.onnx.import_ops  # noqa: F401  (registers the built-in handlers)


def operand_geometry(operand_shape, shape):
    """How a constant of ``operand_shape`` broadcasts against ``shape``, as Caffe's
    ``(axis, operand shape)`` (the span of its non-unit axes), or None if it spans no axis
    or does not cover whole axes of ``shape``."""
    rank = len(shape)
    if len(operand_shape) > rank:
        return None
    padded = (1,) * (rank - len(operand_shape)) + tuple(operand_shape)
    big = [i for i, d in enumerate(padded) if d != 1]
    if not big:
        return None
    first, last = big[0], big[-1]
    if any(padded[i] != shape[i] for i in range(first, last + 1)):
        return None
    return first, tuple(padded[first : last + 1])


class NodeContext:
    """What a handler sees of one node, and how it adds Caffe layers."""

    def __init__(self, importer: _Importer, index: int):
        from onnx import helper

        self.importer = importer
        self.index = index
        self.node = importer.nodes[index]
        self.attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
        self.inputs = list(self.node.input)
        self.outputs = list(self.node.output)

    # ---- reading ---------------------------------------------------------------------
    def attr(self, name: str, default=None):
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def const(self, i: int):
        """Input ``i`` as a numpy array if it is a constant, else None."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        return self.importer.constants.get(self.inputs[i])

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    def blob(self, i: int) -> str:
        """Input ``i`` as a Caffe blob name (it must not be a constant)."""
        name = self.inputs[i]
        if name in self.importer.constants:
            raise self.error(f"input {i} ({name!r}) is a constant where a tensor is expected")
        return self.importer.alias.get(name, name)

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self.importer.shapes.get(name)
        if shape is None:
            raise self.error(f"the shape of {name!r} is unknown (shape inference found none)")
        return shape

    def in_shape(self, i: int = 0) -> tuple[int, ...]:
        return self.shape(self.inputs[i])

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return self.shape(self.outputs[i])

    # ---- neighbours --------------------------------------------------------------------
    def sole_consumer(self, value: str):
        """(index, node) of the only node reading ``value``, if it is not a graph output."""
        readers = self.importer.consumers.get(value, [])
        if len(readers) != 1 or value in self.importer.graph_outputs:
            return None
        index = readers[0]
        return index, self.importer.nodes[index]

    def producer(self, value: str):
        index = self.importer.producers.get(value)
        return None if index is None else self.importer.nodes[index]

    def take(self, index: int) -> None:
        """Mark a later node as handled by this one."""
        self.importer.taken.add(index)

    def const_of(self, name: str):
        return self.importer.constants.get(name)

    # ---- writing -----------------------------------------------------------------------
    def absorb_add(self, value: str, geometry, blobs: list) -> tuple[str, bool]:
        """An Add of a constant right after ``value``, broadcast along the same Caffe axes
        as ``geometry`` ``(axis, operand shape)``, becomes this layer's bias: the Add is
        taken and its values appended to ``blobs``. Returns (the layer's top, whether it
        has a bias)."""
        found = self.sole_consumer(value)
        if found is None or found[1].op_type != "Add":
            return value, False
        index, node = found
        other = [n for n in node.input if n != value]
        bias = self.const_of(other[0]) if len(other) == 1 else None
        if bias is None or operand_geometry(bias.shape, self.shape(value)) != geometry:
            return value, False
        self.take(index)
        blobs.append(np.asarray(bias).reshape(geometry[1]))
        return node.output[0], True

    def alias(self, output: str, blob: str) -> None:
        """``output`` is the same values as Caffe blob ``blob`` (no layer needed)."""
        self.importer.alias[output] = blob

    def layer(self, type_: str, bottoms, tops, blobs=(), name: str | None = None):
        """Append a Caffe layer; its LayerParameter, for the handler to fill in."""
        from caffelite.io import array_to_blobproto

        param = self.importer.net.layer.add()
        param.name = self.importer.layer_name(name or self.node.name or tops[0])
        param.type = type_
        param.bottom.extend(bottoms)
        param.top.extend(tops)
        for array in blobs:
            param.blobs.append(array_to_blobproto(np.asarray(array, dtype=np.float32)))
        return param

    def error(self, message: str) -> CaffeliteError:
        node = self.node
        return CaffeliteError(
            f"ONNX node #{self.index} {node.name!r} ({node.op_type}) cannot be expressed in "
            f"Caffe: {message}"
        )


class _Importer:
    def __init__(self, model, batch: int):
        from caffelite.proto import caffe_pb2

        onnx = require("onnx")
        self.onnx = onnx
        model = _with_concrete_inputs(model, batch)
        model = onnx.shape_inference.infer_shapes(model)
        graph = model.graph
        self.graph = graph
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.nodes = list(graph.node)
        from onnx import numpy_helper

        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            shape = _static_shape(value)
            if shape is not None:
                self.shapes[value.name] = shape
        self.graph_outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        self.producers: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers[name].append(i)
            for name in node.output:
                self.producers[name] = i
        self.alias: dict[str, str] = {}
        self.taken: set[int] = set()
        self.padded: dict[str, tuple] = {}  # Pad outputs awaiting their pool
        self.net = caffe_pb2.NetParameter(name=graph.name or "imported")
        self._layer_names: set[str] = set()

    def layer_name(self, hint: str) -> str:
        return unique_name(hint, self._layer_names)

    def run(self):
        for value in self.graph.input:
            if value.name in self.constants:
                continue
            layer = self.net.layer.add(name=self.layer_name(value.name), type="Input")
            layer.top.append(value.name)
            layer.input_param.shape.add().dim.extend(self.shapes[value.name])
        for index, node in enumerate(self.nodes):
            if index in self.taken:
                continue
            if self._fold(node):
                continue
            handler = _HANDLERS.get(node.op_type)
            ctx = NodeContext(self, index)
            if handler is None:
                known = ", ".join(sorted(_HANDLERS))
                raise ctx.error(f"no importer for op {node.op_type}; importable ops: {known}")
            handler(ctx)
        self._finish_outputs()
        _drop_dead_layers(self.net, self.graph_outputs)
        _run_in_place(self.net, self.graph_outputs)
        self._silence_unread_inputs()
        return self.net

    def _silence_unread_inputs(self) -> None:
        """An input the graph never reads (a Crop's reference shape, say) must not become a
        Caffe output: a Silence layer reads it."""
        read = {b for layer in self.net.layer for b in layer.bottom} | self.graph_outputs
        unread = [
            t
            for layer in self.net.layer
            if layer.type == "Input"
            for t in layer.top
            if t not in read
        ]
        if unread:
            layer = self.net.layer.add(name=self.layer_name("unread_inputs"), type="Silence")
            layer.bottom.extend(unread)

    def _fold(self, node) -> bool:
        """Evaluate a node whose inputs are all known constants (or a Shape of a known shape)."""
        if node.op_type == "Shape" and node.input[0] in self.shapes:
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            shape = np.array(self.shapes[node.input[0]], dtype=np.int64)
            self.constants[node.output[0]] = shape[start:end]
            return True
        if not all(name in self.constants for name in node.input if name):
            return False
        if node.op_type in ("Dropout",) and not node.input:
            return False
        from onnx.reference import ReferenceEvaluator

        feeds = {name: self.constants[name] for name in node.input if name}
        results = ReferenceEvaluator(node).run(None, feeds)
        for name, value in zip(node.output, results, strict=False):
            self.constants[name] = np.asarray(value)
        return True

    def _finish_outputs(self) -> None:
        """A graph output that ended up as an alias gets an identity layer under its name."""
        for output in self.graph.output:
            blob = self.alias.get(output.name)
            if blob is not None and blob != output.name:
                layer = self.net.layer.add(name=self.layer_name(output.name), type="Power")
                layer.bottom.append(blob)
                layer.top.append(output.name)
            elif output.name in self.constants:
                raise CaffeliteError(f"graph output {output.name!r} is a constant")


def _static_shape(value):
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _with_concrete_inputs(model, batch: int):
    """A copy whose inputs have fixed sizes: a symbolic dimension becomes ``batch``."""
    copy = type(model)()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch
    return copy


def _drop_dead_layers(net, outputs: set[str]) -> None:
    """Remove layers none of whose tops is read later or is a graph output (iterated)."""
    while True:
        read = set(outputs)
        for layer in net.layer:
            read.update(layer.bottom)
        dead = [
            i
            for i, layer in enumerate(net.layer)
            if layer.type != "Input" and layer.top and not any(t in read for t in layer.top)
        ]
        if not dead:
            return
        for i in reversed(dead):
            del net.layer[i]


#: Layers that Caffe runs in place on their bottom, as its deploy nets write them.
IN_PLACE_TYPES = frozenset({"BatchNorm", "Scale", "Bias", "ReLU"})


def _run_in_place(net, outputs: set[str]) -> None:
    """Run a BatchNorm, Scale, Bias or ReLU in place on its bottom where no other layer
    reads that bottom, as Caffe's deploy nets do: ONNX names every value, but in Caffe an
    in-place Convolution -> BatchNorm -> Scale -> ReLU chain is what TEST folding fuses
    (caffelite.fold), so the imported net runs, and rounds, like the one exported; and
    the intermediate blobs are not kept: the chain's blob has its last value's name (an
    exported Caffe net's own blob name). Graph inputs and outputs keep their names."""
    inputs = {t for layer in net.layer if layer.type == "Input" for t in layer.top}
    for index, layer in enumerate(net.layer):
        if layer.type not in IN_PLACE_TYPES or len(layer.bottom) != 1 or len(layer.top) != 1:
            continue
        bottom, top = layer.bottom[0], layer.top[0]
        if bottom == top or bottom in inputs or bottom in outputs or top in outputs:
            continue
        writers = [j for j in range(index) if bottom in net.layer[j].top]
        readers = sum(list(other.bottom).count(bottom) for other in net.layer[writers[-1] + 1 :])
        if readers != 1:  # read again (as this version) later: keep its values
            continue
        for earlier in net.layer[writers[0] : index + 1]:  # the chain takes the last name
            earlier.bottom[:] = [top if b == bottom else b for b in earlier.bottom]
            earlier.top[:] = [top if t == bottom else t for t in earlier.top]


def import_onnx(source, batch: int = 1):
    """An ONNX model (path or ModelProto) as a NetParameter whose layers carry their weights.

    A symbolic input dimension (a dynamic batch) becomes ``batch`` in the Input layer;
    reshape the net's input blob for other sizes.
    """
    onnx = require("onnx")
    _load_handlers()
    is_path = isinstance(source, (str, Path))
    where = str(source) if is_path else "the ONNX model"
    try:
        model = onnx.load(str(source)) if is_path else source
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise CaffeliteError(f"{where}: not a valid ONNX model: {exc}") from None
    return _Importer(model, batch).run()


def split_weights(net_param):
    """(prototxt NetParameter without blobs, caffemodel NetParameter with them)."""
    from caffelite.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    model.CopyFrom(net_param)
    for layer in model.layer:
        del layer.blobs[:]
    return model, net_param


def import_file(onnx_path, prototxt_path, weights_path, batch: int = 1) -> None:
    """``caffelite import-onnx``: write the prototxt and the caffemodel (each atomically)."""
    from caffelite.prototxt import write_binary_atomic, write_text

    net = import_onnx(onnx_path, batch)
    model, weights = split_weights(net)
    write_text(prototxt_path, model)
    write_binary_atomic(weights_path, weights)
