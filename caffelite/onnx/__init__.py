"""ONNX export and import (``pip install caffelite[onnx]``).

``export(net, path)`` writes a Net as an ONNX model computing exactly what Caffe computes;
``import_onnx(path)`` turns an ONNX model back into a NetParameter and its weights.
"""

from caffelite.onnx.export import export, export_file, exportable_types, register_exporter
from caffelite.onnx.graph import DEFAULT_OPSET
from caffelite.onnx.importer import import_file, import_onnx, register_importer

__all__ = [
    "DEFAULT_OPSET",
    "export",
    "export_file",
    "exportable_types",
    "import_file",
    "import_onnx",
    "register_exporter",
    "register_importer",
]
