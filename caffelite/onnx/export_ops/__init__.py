"""The built-in ONNX export handlers, one module per family of Caffe layers."""

from caffelite.onnx.export_ops import neurons, normalization, tensors, vision  # noqa: F401
