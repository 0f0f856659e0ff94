"""Spatial coordinate maps between NetSpec tops (pycaffe's ``caffe.coord_map``).

A map ``(axis, a, b)`` says that output coordinate ``a * x + b`` holds what input
coordinate ``x`` held, on the spatial axes from ``axis`` on; ``(None, 1, 0)`` is the
identity of pointwise layers, which works on any axis. Convolution and pooling
shrink by their stride, deconvolution grows by it, padding and kernel size shift.
``coord_map_from_to`` composes the maps along the graph from a common ancestor, and
``crop`` uses it to write the Crop layer that aligns one top to another (as in FCN).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.net_spec import Top, layers

__all__ = [
    "AxisMismatchException",
    "PASS_THROUGH_LAYERS",
    "UndefinedMapException",
    "compose",
    "conv_params",
    "coord_map",
    "coord_map_from_to",
    "crop",
    "crop_params",
    "inverse",
]

PASS_THROUGH_LAYERS = [
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
    "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
    "Threshold",
]  # fmt: skip
_STRIDED = {"Convolution": "convolution_param", "Im2col": "convolution_param",
            "Pooling": "pooling_param", "Deconvolution": "convolution_param"}  # fmt: skip
_LEGACY_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}
IDENTITY = (None, 1, 0)


class UndefinedMapException(CaffeliteError):
    """The layer has no coordinate map (e.g. InnerProduct): the walk stops there."""


class AxisMismatchException(CaffeliteError):
    """Two maps act on different axes and cannot be composed."""


class UnconnectedTopsError(CaffeliteError, RuntimeError):
    """No spatial path joins the two tops (a RuntimeError, as pycaffe raises)."""


class CropError(CaffeliteError, AssertionError):
    """The crop is impossible (an AssertionError, as pycaffe's asserts raise)."""


def _layer_params(fn, message: str) -> dict:
    """The keyword parameters, from the nested ``*_param`` dict when one was given."""
    nested = fn.params.get(message)
    return dict(nested) if isinstance(nested, dict) else fn.params


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution-like or Pooling
    function, each as a 1-d array (one value, or one per spatial axis)."""
    params = _layer_params(fn, _STRIDED.get(fn.type_name, "convolution_param"))
    legacy = _LEGACY_FIELDS & (set(params) | set(fn.params))
    if legacy:
        raise CropError(
            f"{fn.type_name} layer: coordinate maps do not support the legacy "
            f"{', '.join(sorted(legacy))} fields; give kernel_size/stride/pad lists"
        )
    if "kernel_size" not in params:
        raise UndefinedMapException(f"{fn.type_name} layer without kernel_size has no map")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (
        params.get("axis", 1),
        np.array(params.get("stride", 1), ndmin=1),
        (kernel - 1) * dilation + 1,
        np.array(params.get("pad", 0), ndmin=1),
    )


def crop_params(fn):
    """(axis, offset) of a Crop function, with Caffe's defaults (axis 2, offset 0)."""
    params = _layer_params(fn, "crop_param")
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The map ``(axis, a, b)`` from a layer function's input to its output."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, kernel, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (kernel - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, kernel, pad = conv_params(fn)
        return axis, stride, (kernel - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return IDENTITY
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # axis - 1: the last axis the crop leaves alone
    raise UndefinedMapException(f"no coordinate map for a {fn.type_name} layer")


def compose(base_map, next_map):
    """``next_map`` applied after ``base_map``: scales multiply, shifts scale and add."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        axis = ax2
    elif ax2 is None or ax1 == ax2:
        axis = ax1
    else:
        raise AxisMismatchException(f"cannot compose maps on axes {ax1} and {ax2}")
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back from output to input coordinates."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mappable_bottoms(top: Top):
    """A Crop layer's second bottom only gives the size, so only its first is walked."""
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk(start: Top):
    """Yield (top, map from it to ``start``) for ``start`` and its spatial ancestors,
    nearest first; layers without a map end their branch."""
    maps = {start: IDENTITY}
    frontier = deque([start])
    while frontier:
        top = frontier.popleft()
        yield top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in maps:
                maps[bottom] = compose(maps[top], step)
                frontier.append(bottom)


def coord_map_from_to(top_from: Top, top_to: Top):
    """The map taking ``top_from``'s coordinates to ``top_to``'s, through the nearest
    ancestor they share."""
    from_maps = dict(_walk(top_from))
    for top, to_map in _walk(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise UnconnectedTopsError(
        f"could not compute the map between {top_from!r} and {top_to!r}: are they "
        "connected by spatial layers?"
    )


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer that crops ``top_from`` to ``top_to``'s extent, aligned by their map."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise CropError(f"scale mismatch on crop (a = {a}): the tops have different strides")
    if not np.all(b <= 0):
        raise CropError(f"cannot crop a negative offset (b = {b}): {top_from!r} is smaller")
    if not np.all(np.round(b) == b):
        raise CropError(f"cannot crop a non-integer offset (b = {b})")
    offset = [int(x) for x in -np.round(np.asarray(b, dtype=float).reshape(-1))]
    return layers.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=offset))
