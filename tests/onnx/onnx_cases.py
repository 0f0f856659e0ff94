"""Shared by the ONNX tests: one-layer nets from a snippet, random weights, runtime comparison."""

from __future__ import annotations

import numpy as np

import caffelite as caffe
from caffelite.onnx.verify import relative_error, run_both, runtime_session
from caffelite.prototxt import parse_text

TOLERANCE = 1e-4


def net_from_snippet(layers: str, inputs: dict[str, tuple[int, ...]]):
    """A TEST-phase Net: one Input layer per named input, then ``layers`` (prototxt text)."""
    from caffelite.proto import caffe_pb2

    text = "".join(
        f'layer {{ name: "{name}" type: "Input" top: "{name}" '
        f"input_param {{ shape {{ {' '.join(f'dim: {d}' for d in shape)} }} }} }}\n"
        for name, shape in inputs.items()
    )
    param = parse_text(text + layers, caffe_pb2.NetParameter(name="case"))
    return caffe.Net(param, caffe.TEST)


def randomize(net, rng) -> None:
    """Weights of a usable scale (fan-in scaled normals); BatchNorm gets real statistics."""
    for name, blobs in net.params.items():
        layer = net.layer_dict[name]
        if layer.type == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 1, blobs[0].shape) * 2.0
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].shape) * 2.0
            blobs[2].data[...] = 2.0  # Caffe's stored scale factor
            continue
        for blob in blobs:
            fan_in = int(np.prod(blob.shape[1:])) if len(blob.shape) > 1 else 1
            blob.data[...] = rng.normal(0, 1, blob.shape) / np.sqrt(fan_in)


def random_inputs(net, batch: int, rng, integers: int | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name in net.inputs:
        shape = (batch, *net.blobs[name].shape[1:])
        if integers:
            out[name] = rng.integers(0, integers, shape).astype(np.float32)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def assert_matches_runtime(net, model, batches=(1, 4), rng=None, integers=None) -> None:
    """ONNX Runtime's outputs equal the net's to TOLERANCE (relative), at each batch size."""
    rng = rng or np.random.default_rng(1)
    session = runtime_session(model)
    for batch in batches:
        for name, ours, theirs in run_both(net, session, random_inputs(net, batch, rng, integers)):
            assert ours.shape == theirs.shape, (name, batch, ours.shape, theirs.shape)
            error = relative_error(ours, theirs)
            assert error <= TOLERANCE, f"{name} at batch {batch}: relative error {error:.3g}"
