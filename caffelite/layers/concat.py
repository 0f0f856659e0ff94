"""Concat: join bottoms along one axis (Caffe's ConcatLayer).

Every bottom is viewed as ``(outer, size_i * inner)`` around the concat axis, so
the copy into (and back out of) the top is one slice assignment per bottom.
A single bottom is passed through: the top shares its data (set up in reshape)
and backward makes the bottom use the top's diff memory, as Flatten does, so
nothing is copied either way.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis, split_axis


def concat_axis(layer: Layer, blob, param, axis_field: str, legacy_field: str) -> int:
    """The axis from ``axis`` or the legacy non-negative ``*_dim`` (not both)."""
    if param.HasField(axis_field) and param.HasField(legacy_field):
        raise layer.error(f"give either {axis_field} or {legacy_field}, not both")
    if param.HasField(legacy_field):
        legacy = getattr(param, legacy_field)
        if legacy >= blob.num_axes:
            raise layer.error(
                f"{legacy_field} {legacy} is out of range for a bottom of shape {blob.shape}"
            )
        return legacy
    return canonical_axis(layer, blob, getattr(param, axis_field))


@register_layer("Concat")
class ConcatLayer(Layer):
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.concat_param
        if param.HasField("axis") and param.HasField("concat_dim"):
            raise self.error("give either axis or concat_dim, not both")

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.concat_param
        first = bottom[0]
        self.axis = axis = concat_axis(self, first, param, "axis", "concat_dim")
        shape = list(first.shape)
        for i, blob in enumerate(bottom[1:], start=1):
            same_rest = blob.num_axes == first.num_axes and all(
                blob.shape[j] == first.shape[j] for j in range(first.num_axes) if j != axis
            )
            if not same_rest:
                raise self.error(
                    f"all bottoms must have the same shape except along axis {axis}; "
                    f"bottom[0] has shape {first.shape}, bottom[{i}] has shape {blob.shape}"
                )
            shape[axis] += blob.shape[axis]
        top[0].reshape(shape)
        self.outer, _, self.inner = split_axis(first.shape, axis)
        if len(bottom) == 1:
            top[0].share_data(first)

    def _views(self, top, bottom):
        """(top view, width, bottom) per bottom: the top as (outer, n * inner) slices."""
        top2d = top.reshape(self.outer, top.shape[self.axis] * self.inner)
        start = 0
        for blob in bottom:
            width = blob.shape[self.axis] * self.inner
            yield top2d[:, start : start + width], width, blob
            start += width

    def forward(self, bottom, top) -> None:
        if len(bottom) == 1:
            return
        for view, width, blob in self._views(top[0].data, bottom):
            view[...] = blob.data.reshape(self.outer, width)

    def backward(self, top, propagate_down, bottom) -> None:
        if len(bottom) == 1:
            if propagate_down[0]:
                bottom[0].share_diff(top[0])
            return
        for i, (view, width, blob) in enumerate(self._views(top[0].diff, bottom)):
            if propagate_down[i]:
                blob.diff.reshape(self.outer, width)[...] = view
