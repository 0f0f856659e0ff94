"""The built-in ONNX export handlers, one module per family of Caffe layers."""

from caffelite.onnx.export_ops import (  # noqa: F401
    neurons,
    normalization,
    recurrent,
    tensors,
    vision,
)
