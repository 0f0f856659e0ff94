"""The PyTorch equivalent of a caffelite Net, built from the net's own layers and weights.

Each Caffe layer type maps to torch.nn.functional calls (eager mode); the weights are
copied from the caffelite net, so both compute the same function and
:func:`max_difference` can check that before anything is timed. Only the layer types
of the benchmarked nets (LeNet and models/) are covered; any other type is a clear
error naming the layer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from caffelite.proto import caffe_pb2

_P = caffe_pb2.PoolingParameter
_E = caffe_pb2.EltwiseParameter


def _pair(param, repeated: str, name_h: str | None, default: int) -> tuple[int, int]:
    if name_h and param.HasField(name_h):
        return (getattr(param, name_h), getattr(param, name_h[:-1] + "w"))
    values = list(getattr(param, repeated))
    return (values[0], values[-1]) if values else (default, default)


class TorchNet:
    """Runs the layers of ``net`` (a caffelite Net) in order on torch tensors, on
    ``device`` ("cpu", or "cuda" for the GPU comparison of benchmarks/gpu_check.py)."""

    def __init__(self, net, device: str = "cpu"):
        self.device = torch.device(device)
        self.steps = []
        self.params: list[torch.Tensor] = []
        self.inputs = list(net.inputs)
        self.outputs = list(net.outputs)
        for name, layer in zip(net._layer_names, net.layers, strict=True):
            weights = [self._param(blob.data) for blob in layer.blobs]
            bottoms, tops = net.bottom_names[name], net.top_names[name]
            self.steps.append((name, self._function(layer, weights), bottoms, tops))

    def _param(self, array) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(array)).to(self.device).requires_grad_(True)
        self.params.append(tensor)
        return tensor

    def _function(self, layer, w):
        lp, kind = layer.layer_param, layer.layer_param.type
        if kind in ("Input", "Silence"):
            return None
        if kind == "Convolution":
            p = lp.convolution_param
            stride = _pair(p, "stride", "stride_h", 1)
            pad = _pair(p, "pad", "pad_h", 0)
            dilation = _pair(p, "dilation", None, 1)
            bias = w[1] if p.bias_term else None
            return lambda x: F.conv2d(x, w[0], bias, stride, pad, dilation, p.group)
        if kind == "InnerProduct":
            p = lp.inner_product_param
            weight = w[0].t() if p.transpose else w[0]
            bias = w[1] if p.bias_term else None
            return lambda x: F.linear(x.flatten(p.axis), weight, bias)
        if kind == "ReLU":
            slope = lp.relu_param.negative_slope
            return (lambda x: F.leaky_relu(x, slope)) if slope else F.relu
        if kind == "Pooling":
            return self._pooling(layer)
        if kind == "LRN":
            p = lp.lrn_param
            return lambda x: F.local_response_norm(x, p.local_size, p.alpha, p.beta, p.k)
        if kind == "Split":
            count = len(lp.top)
            return lambda x: (x,) * count
        if kind == "Dropout":
            return lambda x: x  # TEST phase: identity, as Caffe's
        if kind == "Softmax":
            return lambda x: F.softmax(x, dim=lp.softmax_param.axis)
        if kind == "Concat":
            return lambda *xs: torch.cat(xs, dim=lp.concat_param.axis)
        if kind == "BatchNorm":
            factor = float(layer.blobs[2].data[0])
            factor = 1.0 / factor if factor else 0.0
            mean = torch.from_numpy(layer.blobs[0].data * factor).to(self.device)
            var = torch.from_numpy(layer.blobs[1].data * factor).to(self.device)
            eps = lp.batch_norm_param.eps
            return lambda x: F.batch_norm(x, mean, var, training=False, eps=eps)
        if kind == "Scale":
            gamma = w[0].reshape(1, -1, 1, 1)
            beta = w[1].reshape(1, -1, 1, 1) if len(w) > 1 else None
            return (lambda x: x * gamma + beta) if beta is not None else (lambda x: x * gamma)
        if kind == "Eltwise":
            p = lp.eltwise_param
            if p.operation == _E.SUM and not p.coeff:
                return lambda *xs: sum(xs[1:], xs[0])
            if p.operation == _E.PROD:
                return lambda *xs: torch.stack(xs).prod(0)
            if p.operation == _E.MAX:
                return lambda *xs: torch.stack(xs).max(0).values
        raise ValueError(f"layer {lp.name!r}: no PyTorch equivalent for type {kind!r} here")

    @staticmethod
    def _pooling(layer):
        """Caffe's pooled size is PyTorch's ceil_mode with padding rule; checked by
        comparing outputs, not assumed."""
        p = layer.layer_param.pooling_param
        kernel, stride, pad = layer.kernel, layer.stride, layer.pad
        ceil = p.round_mode == _P.CEIL
        if p.pool == _P.MAX:
            return lambda x: F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)
        return lambda x: F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil)

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        blobs = dict(inputs)
        for _, function, bottoms, tops in self.steps:
            if function is None:
                continue
            out = function(*(blobs[b] for b in bottoms))
            for top, value in zip(tops, out if isinstance(out, tuple) else (out,), strict=True):
                blobs[top] = value
        return blobs

    def zero_grad(self) -> None:
        for tensor in self.params:
            tensor.grad = None


def max_difference(net, torch_net, inputs: dict) -> float:
    """Largest |caffelite - torch| over the net outputs, relative to the output scale."""
    for name, array in inputs.items():
        net.blobs[name].data[...] = array
    net.forward()
    with torch.no_grad():
        tensors = {k: torch.from_numpy(v).to(torch_net.device) for k, v in inputs.items()}
        blobs = torch_net.forward(**tensors)
    worst = 0.0
    for name in net.outputs:
        ours, theirs = net.blobs[name].data, blobs[name].cpu().numpy()
        scale = max(float(np.abs(theirs).max()), 1e-30)
        worst = max(worst, float(np.abs(ours - theirs).max()) / scale)
    return worst
