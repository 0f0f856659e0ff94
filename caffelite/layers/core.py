"""Layers the Net itself relies on: Input (net inputs) and Split (inserted automatically)."""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


@register_layer("Input")
class InputLayer(Layer):
    """Net inputs of fixed shapes (``input_param.shape``); the caller fills the data."""

    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(
                f"gives {len(shapes)} shapes for {len(top)} tops; give 1 or {len(top)}"
            )
        for k, blob in enumerate(top):
            if shapes:
                blob.reshape(shapes[0] if len(shapes) == 1 else shapes[k])

    def reshape(self, bottom, top):
        """Input blobs keep the shape the user gives them."""

    def forward(self, bottom, top):
        """The data is already in the tops."""


@register_layer("Split")
class SplitLayer(Layer):
    """One bottom feeding several consumers: tops share its data, diffs are summed."""

    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape(bottom[0].shape)
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        """Nothing to compute: ``reshape`` made every top a view of the bottom."""

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        self.xp.add(top[0].diff, top[1].diff, out=diff)
        for blob in top[2:]:
            diff += blob.diff
