"""Filter: keep the items (axis-0 entries) whose selector is non-zero.

The last bottom is the selector, shaped ``(N,)`` or ``(N, 1, ...)``; every other
bottom is filtered into the top of the same position. The number of kept items
depends on the data, so it is decided in reshape (the Net reshapes before every
forward). The very first reshape, during net setup, sees no real data yet and
sizes the tops with all N items, as Caffe does; forward re-sizes the tops if the
selection differs from what reshape saw. Backward scatters the top diffs back and
zeroes the rows that were dropped. The selector gets no gradient.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


@register_layer("Filter")
class FilterLayer(Layer):
    min_bottom_blobs = 2
    min_top_blobs = 1

    def setup(self, bottom, top) -> None:
        if len(top) != len(bottom) - 1:
            raise self.error(
                f"needs one top per filtered bottom: {len(bottom) - 1} bottoms (plus the "
                f"selector) but {len(top)} tops"
            )
        self.num_bottoms = len(bottom)
        self._first_reshape = True

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != getattr(self, "num_bottoms", 0) - 1

    def _select(self, bottom, top, keep_all: bool = False) -> None:
        """Find the kept items from the selector and size the tops for them."""
        xp = self.xp
        selector = bottom[-1]
        self.indices = xp.nonzero(selector.data.reshape(-1) != 0)[0]
        kept = bottom[0].shape[0] if keep_all else int(self.indices.size)
        for t, blob in zip(top, bottom[:-1], strict=True):
            t.reshape((kept,) + blob.shape[1:])

    def reshape(self, bottom, top) -> None:
        selector = bottom[-1]
        if selector.num_axes == 0 or any(d != 1 for d in selector.shape[1:]):
            raise self.error(
                f"the selector (last bottom) must have shape (N,) or (N, 1, ...); "
                f"got {selector.shape}"
            )
        for i, blob in enumerate(bottom[:-1]):
            if blob.num_axes == 0 or blob.shape[0] != selector.shape[0]:
                raise self.error(
                    f"bottom[{i}] of shape {blob.shape} must have the same first dimension "
                    f"as the selector of shape {selector.shape}"
                )
        self._select(bottom, top, keep_all=self._first_reshape)
        self._first_reshape = False

    def forward(self, bottom, top) -> None:
        xp = self.xp
        self._select(bottom, top)
        for t, blob in zip(top, bottom[:-1], strict=True):
            xp.take(blob.data, self.indices, axis=0, out=t.data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[-1]:
            raise self.error("cannot backpropagate to the selector (last bottom)")
        for i, t in enumerate(top):
            if propagate_down[i]:
                diff = bottom[i].diff
                diff[...] = 0
                diff[self.indices] = t.diff
