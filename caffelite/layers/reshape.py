"""Reshape: change the shape without touching the data (Caffe's ReshapeLayer).

``reshape_param.shape`` replaces the bottom axes ``[axis, axis + num_axes)``
(``num_axes: -1`` means to the end; a negative ``axis`` counts from the end, with
-1 meaning *after* the last axis). In the new shape a 0 copies the bottom's
dimension at that position and one -1 is inferred from the count. Nothing is
ever copied: the top views the bottom's data (shared in reshape) and backward
makes the bottom use the top's diff memory, as Flatten does. (Sharing the diff
only at backward time keeps a caller's zeroing of the bottom diff from wiping
the top's gradient before backward runs.)
"""

from __future__ import annotations

import math

from caffelite.layer import Layer, register_layer


def reshaped(shape: tuple[int, ...], dims: list[int], axis: int, num_axes: int):
    """The top shape, or a string saying what is wrong (the layer adds its name)."""
    n = len(shape)
    start = axis if axis >= 0 else n + axis + 1
    if not 0 <= start <= n:
        return f"axis {axis} is out of range for a {n}-axis bottom of shape {shape}"
    if num_axes < -1:
        return f"num_axes must be >= 0, or -1 for all; got {num_axes}"
    end = n if num_axes == -1 else start + num_axes
    if end > n:
        return (
            f"axis + num_axes = {start} + {num_axes} = {end} is beyond the {n} axes of "
            f"the bottom of shape {shape}"
        )
    new = list(dims)
    for k, d in enumerate(dims):
        if d == 0:
            if start + k >= n:
                return (
                    f"shape dim {k} is 0 (copy) but the bottom of shape {shape} has no "
                    f"axis {start + k} to copy"
                )
            new[k] = shape[start + k]
    if -1 in dims:
        k = dims.index(-1)
        known = math.prod(d for j, d in enumerate(new) if j != k)
        known *= math.prod(shape[:start]) * math.prod(shape[end:])
        count = math.prod(shape)
        if known == 0 or count % known:
            return (
                f"cannot infer the -1 dim: the bottom count {count} (shape {shape}) is not "
                f"divisible by the product of the other dims ({known})"
            )
        new[k] = count // known
    top_shape = tuple(shape[:start]) + tuple(new) + tuple(shape[end:])
    if math.prod(top_shape) != math.prod(shape):
        return (
            f"the new shape {top_shape} has {math.prod(top_shape)} elements but the bottom "
            f"of shape {shape} has {math.prod(shape)}"
        )
    return top_shape


@register_layer("Reshape")
class ReshapeLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        self.dims = [int(d) for d in self.layer_param.reshape_param.shape.dim]
        if self.dims.count(-1) > 1:
            raise self.error(f"shape {self.dims} has more than one -1; at most one is inferred")
        if any(d < -1 for d in self.dims):
            raise self.error(f"shape {self.dims} has a dim below -1")

    def reshape(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.error("does not allow in-place computation (top and bottom are one blob)")
        param = self.layer_param.reshape_param
        shape = reshaped(bottom[0].shape, self.dims, param.axis, param.num_axes)
        if isinstance(shape, str):
            raise self.error(shape)
        top[0].reshape(shape)
        top[0].share_data(bottom[0])

    def forward(self, bottom, top) -> None:
        """Nothing to do: the top views the bottom's data."""

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            bottom[0].share_diff(top[0])
