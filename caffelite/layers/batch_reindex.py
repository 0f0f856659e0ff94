"""BatchReindex: pick (and repeat or reorder) items of bottom 0 by the indices in bottom 1.

``top[k] = bottom0[index[k]]``; an index may repeat or be missing, so backward
scatter-adds the top rows into a zeroed bottom diff. The indices get no gradient.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


@register_layer("BatchReindex")
class BatchReindexLayer(Layer):
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top) -> None:
        if bottom[1].num_axes != 1:
            raise self.error(f"the indices (bottom[1]) must be 1-d; got shape {bottom[1].shape}")
        if bottom[0].num_axes == 0:
            raise self.error("bottom[0] must have a first (batch) axis; got a scalar")
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def _indices(self, bottom):
        """Indices cast to int as Caffe does (truncation), after checking the range."""
        values = bottom[1].data
        size = bottom[0].shape[0]
        bad = ~((values >= 0) & (values < size))  # NaN is bad too
        if bool(bad.any()):
            raise self.error(
                f"index {float(values[bad][0]):g} is out of range for bottom[0] of shape "
                f"{bottom[0].shape}: indices must be in [0, {size})"
            )
        return values.astype(self.xp.int64)

    def forward(self, bottom, top) -> None:
        self.xp.take(bottom[0].data, self._indices(bottom), axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the indices (bottom[1])")
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            self.xp.add.at(diff, self._indices(bottom), top[0].diff)
