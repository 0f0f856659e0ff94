"""The built-in ONNX import handlers, one module per family of ops."""

from caffelite.onnx.import_ops import elementwise, tensors, vision  # noqa: F401
