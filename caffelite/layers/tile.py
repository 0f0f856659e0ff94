"""Tile: repeat the bottom ``tiles`` times along ``axis`` (Caffe's TileLayer).

Seen as ``(outer, inner)`` with ``inner`` everything from ``axis`` on, the top is
``(outer, tiles, inner)``: whole blocks repeat (``[a b a b]``, not ``[a a b b]``).
The gradient sums the copies.
"""

from __future__ import annotations

import math

from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis


@register_layer("Tile")
class TileLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.tile_param
        if not param.HasField("tiles"):
            raise self.error("tile_param.tiles must be given")
        if param.tiles <= 0:
            raise self.error(f"tile_param.tiles must be positive; got {param.tiles}")
        self.tiles = param.tiles
        shape = bottom[0].shape
        axis = canonical_axis(self, bottom[0], param.axis)
        self.outer = math.prod(shape[:axis])
        self.inner = math.prod(shape[axis:])
        top[0].reshape(shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1 :])

    def forward(self, bottom, top) -> None:
        src = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = src

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            self.xp.sum(
                top[0].diff.reshape(self.outer, self.tiles, self.inner),
                axis=1,
                out=bottom[0].diff.reshape(self.outer, self.inner),
            )
