"""Crop: cut bottom 0 down to the shape of bottom 1 from axis ``crop_param.axis`` on.

Axes before ``axis`` (default 2: keep N and C) are kept whole; each later axis
takes bottom 1's size, starting at ``offset`` (one value for all cropped axes, or
one per axis, or none for 0). The crop is a single n-d slice; backward puts the
top diff back into that window of a zeroed bottom diff. Bottom 1 only gives a
shape, so it never gets a gradient.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis


@register_layer("Crop")
class CropLayer(Layer):
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top) -> None:
        data, like = bottom
        n = data.num_axes
        if like.num_axes != n:
            raise self.error(
                f"both bottoms need the same number of axes; bottom[0] has shape "
                f"{data.shape}, bottom[1] has shape {like.shape}"
            )
        start = canonical_axis(self, data, self.layer_param.crop_param.axis)
        offsets = list(self.layer_param.crop_param.offset)
        if len(offsets) > 1 and len(offsets) != n - start:
            raise self.error(
                f"has {len(offsets)} offsets; give one, or one per cropped axis "
                f"({n - start}: axes {start}..{n - 1} of the bottom of shape {data.shape})"
            )
        window = []
        for i in range(n):
            if i < start:
                window.append(slice(None))
                continue
            offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
            if data.shape[i] - offset < like.shape[i]:
                raise self.error(
                    f"the crop of axis {i} is out of bounds: size {like.shape[i]} at offset "
                    f"{offset} does not fit bottom[0] of shape {data.shape} "
                    f"(cropping to bottom[1] of shape {like.shape})"
                )
            window.append(slice(offset, offset + like.shape[i]))
        self.window = tuple(window)
        top[0].reshape(tuple(like.shape[i] if i >= start else data.shape[i] for i in range(n)))

    def forward(self, bottom, top) -> None:
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            diff[self.window] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = 0
