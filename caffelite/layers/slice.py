"""Slice: cut one bottom into several tops along an axis (Caffe's SliceLayer).

``slice_point`` gives the cut positions (one fewer than the tops); without it the
axis is split into equal parts. The bottom is viewed as ``(outer, size * inner)``
so each top is one slice copy. A single top is passed through: it shares the
bottom's data, and backward makes the bottom use the top's diff memory (no copies).
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.layers.concat import concat_axis
from caffelite.shapes import split_axis


@register_layer("Slice")
class SliceLayer(Layer):
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.slice_param
        if param.HasField("axis") and param.HasField("slice_dim"):
            raise self.error("give either axis or slice_dim, not both")

    def _sizes(self, size: int, num_top: int, shape) -> list[int]:
        """The extent of each top along the slice axis."""
        points = list(self.layer_param.slice_param.slice_point)
        if not points:
            if size % num_top:
                raise self.error(
                    f"{num_top} tops do not evenly divide the slice axis {self.axis} of size "
                    f"{size} (bottom shape {shape}); give slice_point or change the tops"
                )
            return [size // num_top] * num_top
        if len(points) != num_top - 1:
            raise self.error(
                f"has {len(points)} slice_point values for {num_top} tops; "
                f"need exactly {num_top - 1}"
            )
        bounds = [0, *points, size]
        if any(b <= a for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
            raise self.error(
                f"slice_point {points} must be strictly increasing within (0, {size}) "
                f"for the slice axis {self.axis} of the bottom of shape {shape}"
            )
        return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.slice_param
        blob = bottom[0]
        self.axis = axis = concat_axis(self, blob, param, "axis", "slice_dim")
        self.sizes = self._sizes(blob.shape[axis], len(top), blob.shape)
        self.outer, _, self.inner = split_axis(blob.shape, axis)
        for t, size in zip(top, self.sizes, strict=True):
            shape = list(blob.shape)
            shape[axis] = size
            t.reshape(shape)
        if len(top) == 1:
            top[0].share_data(blob)

    def _views(self, array):
        """(bottom slice as (outer, n * inner), width) for each top."""
        flat = array.reshape(self.outer, array.shape[self.axis] * self.inner)
        start = 0
        for size in self.sizes:
            width = size * self.inner
            yield flat[:, start : start + width], width
            start += width

    def forward(self, bottom, top) -> None:
        if len(top) == 1:
            return
        for t, (view, width) in zip(top, self._views(bottom[0].data), strict=True):
            t.data.reshape(self.outer, width)[...] = view

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        if len(top) == 1:
            bottom[0].share_diff(top[0])
            return
        for t, (view, width) in zip(top, self._views(bottom[0].diff), strict=True):
            view[...] = t.diff.reshape(self.outer, width)
