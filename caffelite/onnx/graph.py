"""The ONNX graph being written: nodes, constants and unique names.

Caffe blobs may be rewritten in place (``ReLU`` with ``top == bottom``); ONNX values are
assigned once. ``GraphBuilder`` therefore maps each Caffe blob name to the ONNX value that
holds its current contents, and gives the last writer of a blob the blob's own name, so a
net's outputs keep their Caffe names in the exported file.
"""

from __future__ import annotations

import numpy as np

from caffelite.errors import CaffeliteError

#: The opsets the handlers are written for: 13 brought Split/Unsqueeze/ReduceSum with their
#: sizes and axes as inputs; 18 moved the other reductions' axes to an input too.
MIN_OPSET = 13
DEFAULT_OPSET = 17


def require(module: str):
    """Import an optional dependency, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CaffeliteError(
            f"ONNX support needs the {module!r} package: pip install 'caffelite[onnx]'"
        ) from None


def unique_name(hint: str, used: set[str]) -> str:
    """``hint``, or ``hint_1``, ``hint_2``... : the first not in ``used``, which it joins."""
    name, i = hint, 1
    while name in used:
        name = f"{hint}_{i}"
        i += 1
    used.add(name)
    return name


class GraphBuilder:
    """Collects ONNX nodes and initializers; hands out fresh value names."""

    def __init__(self, opset: int):
        self.onnx = require("onnx")
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()

    # ---- names ----------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value name not used yet, derived from ``hint``."""
        return unique_name(hint, self._used)

    def reserve(self, name: str) -> None:
        self._used.add(name)

    # ---- nodes and constants --------------------------------------------------------
    def node(self, op: str, inputs: list[str], outputs: list[str] | str, name: str = "", **attrs):
        """Add one node; ``outputs`` given as a string is a hint for one fresh output."""
        if isinstance(outputs, str):
            outputs = [self.fresh(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            self.onnx.helper.make_node(op, inputs, outputs, name=self.fresh(name or op), **attrs)
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def constant(self, hint: str, value, dtype=np.float32) -> str:
        """An initializer holding ``value``; its name."""
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def int64s(self, hint: str, values) -> str:
        return self.constant(hint, list(values), np.int64)

    # ---- ops whose spelling depends on the opset --------------------------------------
    def reduce(self, op: str, x: str, axes, outputs, keepdims: int = 1, name: str = "") -> str:
        """``ReduceSum/Mean/L1/...`` over ``axes``: axes as an input from the op's opset on
        (13 for ReduceSum, 18 for the others), as an attribute before."""
        axes = [int(a) for a in axes]
        if not axes:
            raise ValueError("an empty axes list means 'all axes' to ONNX; refuse it here")
        if self.opset >= (13 if op == "ReduceSum" else 18):
            inputs = [x, self.int64s(f"{name or op}_axes", axes)]
            return self.node(op, inputs, outputs, name=name, keepdims=keepdims)
        return self.node(op, [x], outputs, name=name, axes=axes, keepdims=keepdims)

    def unsqueeze_trailing(self, x: str, rank: int, count: int, out: str) -> str:
        """Append ``count`` unit axes to a rank-``rank`` value (for Caffe's broadcasting
        along an axis, which numpy-style broadcasting aligns from the right)."""
        if count == 0:
            return x
        axes = self.int64s(out + "_axes", range(rank, rank + count))
        return self.node("Unsqueeze", [x, axes], out)
