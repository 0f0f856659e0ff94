"""Shared pieces of the solver tests: Caffe's least-squares problem and its net.

The net is Caffe's test_gradient_based_solver setup: MemoryData serving N=4
samples of D=3 inputs (in batches of N / iter_size), an InnerProduct with one
output and EuclideanLoss. The data are fixed arrays handed to the data layers.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from caffelite.proto import caffe_pb2

N, D = 4, 3


def problem(seed: int = 1701) -> tuple[np.ndarray, np.ndarray]:
    """Fixed inputs X (N, D) and targets y (N,), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = rng.standard_normal(N).astype(np.float32)
    return x, y


def net_text(
    batch_size: int = N, bias_param: str = "", weight_param: str = "", extra_layers: str = ""
) -> str:
    return f"""
    name: "LeastSquares"
    layer {{ name: "data" type: "MemoryData" top: "data" top: "targets"
             memory_data_param {{ batch_size: {batch_size} channels: {D} height: 1 width: 1 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
             param {{ {weight_param} }} param {{ {bias_param} }}
             inner_product_param {{ num_output: 1
               weight_filler {{ type: "gaussian" std: 1.0 }}
               bias_filler {{ type: "gaussian" std: 1.0 }} }} }}
    layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }}
    {extra_layers}
    """


def solver_param(
    text: str = "",
    *,
    batch_size: int = N,
    bias_param: str = "",
    weight_param: str = "",
    net: str | None = None,
) -> caffe_pb2.SolverParameter:
    """A SolverParameter with the least-squares net inline (``net_param``)."""
    param = caffe_pb2.SolverParameter()
    text_format.Merge(
        "base_lr: 0.1 lr_policy: 'fixed' max_iter: 1000 snapshot_after_train: false "
        "random_seed: 1701 " + text,
        param,
    )
    text_format.Merge(
        net if net is not None else net_text(batch_size, bias_param, weight_param),
        param.net_param,
    )
    return param


def feed(solver, x: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
    """Give every MemoryData layer of the solver's nets the fixed arrays."""
    if x is None:
        x, y = problem()
    data = np.ascontiguousarray(x.reshape(x.shape[0], D, 1, 1), dtype=np.float32)
    labels = np.ascontiguousarray(y, dtype=np.float32)
    for net in [solver.net, *solver.test_nets]:
        for layer in net.layers:
            if layer.type == "MemoryData":
                layer.set_input_arrays(data, labels)


def make_solver(cls, text: str = "", **kwargs):
    solver = cls(solver_param(text, **kwargs))
    feed(solver)
    return solver


def ip_params(solver) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the InnerProduct weights (1, D) and bias (1,)."""
    weights, bias = solver.net.params["ip"]
    return weights.data.copy(), bias.data.copy()
