"""Run an exported model in ONNX Runtime beside the caffelite Net it came from."""

from __future__ import annotations

import numpy as np

from caffelite import backend


def runtime_session(path_or_model):
    """An ONNX Runtime CPU session for a path or a ModelProto."""
    from caffelite.onnx.graph import require

    onnxruntime = require("onnxruntime")

    source = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_both(
    net, session, inputs: dict[str, np.ndarray]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Feed ``inputs`` (reshaping the net to them) to both; (output name, caffelite, runtime)."""
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    ours = net.forward(**{k: v.astype(net.blobs[k].dtype) for k, v in inputs.items()})
    theirs = session.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})
    names = [o.name for o in session.get_outputs()]
    return [
        (name, np.array(backend.to_numpy(ours[name])), got)
        for name, got in zip(names, theirs, strict=True)
    ]


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of ``expected``."""
    if expected.shape != actual.shape:
        return float("inf")
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual))) if expected.size else 0.0
    return diff / scale if scale else diff
