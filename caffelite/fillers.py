"""Weight initialisers, keyed by Caffe's ``FillerParameter.type``.

Random numbers are drawn in float64 on the host from the shared generator and then
stored in the blob's type, so results do not depend on the array module.
"""

from __future__ import annotations

import math

import numpy as np

from caffelite import backend, limits
from caffelite.errors import CaffeliteError
from caffelite.rng import get_rng


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fan-in (count / shape[0]) and fan-out (count / shape[1])."""
    count = math.prod(shape)
    if not shape or count == 0:
        raise CaffeliteError(
            f"cannot compute fan-in and fan-out of a blob of shape {shape}"
            + (" (it is empty: does a bottom have a zero dimension?)" if shape else "")
        )
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(param, shape) -> float:
    from caffelite.proto import caffe_pb2

    fan_in, fan_out = _fans(shape)
    norm = param.variance_norm
    if norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(param, shape, rng):
    return np.full(shape, param.value)


def _uniform(param, shape, rng):
    return rng.uniform(param.min, param.max, size=shape)


def _gaussian(param, shape, rng):
    values = rng.normal(param.mean, param.std, size=shape)
    if param.sparse >= 0:
        if len(shape) < 1:
            raise CaffeliteError("a sparse gaussian filler needs a blob with at least 1 axis")
        non_zero_probability = param.sparse / shape[0]
        values *= rng.random(size=shape) < non_zero_probability
    return values


def _positive_unitball(param, shape, rng):
    values = rng.uniform(0.0, 1.0, size=shape)
    rows = values.reshape(shape[0] if shape else 1, -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def _xavier(param, shape, rng):
    scale = math.sqrt(3.0 / _variance_n(param, shape))
    return rng.uniform(-scale, scale, size=shape)


def _msra(param, shape, rng):
    std = math.sqrt(2.0 / _variance_n(param, shape))
    return rng.normal(0.0, std, size=shape)


def _bilinear(param, shape, rng):
    """Upsampling kernels for Deconvolution (FCN): a separable triangle per channel."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise CaffeliteError(
            f"the bilinear filler needs a 4-d blob with square kernels, got {shape}"
        )
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), shape).copy()


FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(blob, filler_param) -> None:
    """Fill ``blob.data`` as ``filler_param`` (a FillerParameter) says."""
    kind = filler_param.type
    if kind not in FILLERS:
        raise CaffeliteError(f"unknown filler type {kind!r}; known: {', '.join(sorted(FILLERS))}")
    # the values are drawn in float64 first: that buffer must fit as well
    limits.check_allocation(blob.shape, 8, f"the float64 values of the {kind} filler")
    values = FILLERS[kind](filler_param, blob.shape, get_rng())
    blob.data[...] = backend.xp().asarray(values, dtype=blob.dtype)
