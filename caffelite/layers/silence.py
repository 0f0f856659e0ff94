"""Silence: swallow blobs nobody uses, so the net does not report them as outputs.

It has no tops; its backward gives zero gradients to bottoms that ask for one.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


@register_layer("Silence")
class SilenceLayer(Layer):
    min_bottom_blobs = 1
    exact_num_top_blobs = 0

    def reshape(self, bottom, top) -> None:
        """No tops to size."""

    def forward(self, bottom, top) -> None:
        """Nothing to compute."""

    def backward(self, top, propagate_down, bottom) -> None:
        for down, blob in zip(propagate_down, bottom, strict=True):
            if down:
                blob.diff[...] = 0
