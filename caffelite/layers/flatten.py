"""Flatten: merge axes ``axis..end_axis`` into one, without copying.

The top is a view of the bottom's memory (shared in reshape). The gradient is the
top's diff itself, so backward makes the bottom use the top's diff memory, as
Caffe's Flatten does (ShareDiff in Backward): nothing is copied either way.
"""

from __future__ import annotations

import math

from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis


def flattened_shape(shape: tuple[int, ...], start: int, end: int) -> tuple[int, ...]:
    """``shape`` with axes ``start..end`` (inclusive, canonical) replaced by their product."""
    return shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]


@register_layer("Flatten")
class FlattenLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.error("does not allow in-place computation (top and bottom are one blob)")
        param = self.layer_param.flatten_param
        start = canonical_axis(self, bottom[0], param.axis)
        end = canonical_axis(self, bottom[0], param.end_axis, "end_axis")
        if end < start:
            raise self.error(
                f"end_axis ({param.end_axis}, i.e. {end}) comes before axis ({param.axis}, "
                f"i.e. {start}) for the bottom of shape {bottom[0].shape}"
            )
        top[0].reshape(flattened_shape(bottom[0].shape, start, end))
        top[0].share_data(bottom[0])

    def forward(self, bottom, top) -> None:
        """Nothing to do: the top already views the bottom's data."""

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            bottom[0].share_diff(top[0])
