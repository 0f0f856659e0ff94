"""SPP (Caffe's SPPLayer): spatial pyramid pooling to a fixed-length vector.

Pyramid level ``l`` pools the image into about ``2^l x 2^l`` bins: kernel and stride
``ceil(H / 2^l)``, padded by half the shortfall (Caffe's rule), with MAX or AVE
(``spp_param.pool``); each level is flattened and the levels are concatenated,
giving ``N x C * sum(4^l)`` values whatever the input size. As in Caffe, the layer
is made of Split, Pooling, Flatten and Concat layers, rebuilt when the input's
height or width changes; with ``pyramid_height: 1`` it is the single Pooling layer
and its top keeps the ``N x C x 1 x 1`` shape.
"""

from __future__ import annotations

import math

from caffelite.blob import Blob
from caffelite.layer import Layer, create_layer, register_layer
from caffelite.proto import caffe_pb2

_SPP = caffe_pb2.SPPParameter
_POOL = {_SPP.MAX: caffe_pb2.PoolingParameter.MAX, _SPP.AVE: caffe_pb2.PoolingParameter.AVE}
_POOL[_SPP.STOCHASTIC] = caffe_pb2.PoolingParameter.STOCHASTIC


def pyramid_window(level: int, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(kernel, pad) of pyramid level ``level``; the stride equals the kernel."""
    bins = 2**level
    kernel = (math.ceil(height / bins), math.ceil(width / bins))
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width), strict=True))
    return kernel, pad


@register_layer("SPP")
class SPPLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        param = self.layer_param.spp_param
        self.pyramid_height = param.pyramid_height
        if self.pyramid_height <= 0:
            raise self.error(
                f"spp_param.pyramid_height must be positive, got {self.pyramid_height}"
            )
        self.pool_method = _POOL[param.pool]
        self._built_for = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {shape}")
        if shape[2] <= 0 or shape[3] <= 0:
            raise self.error(f"input height and width must be positive, got {shape}")
        if shape[2:] != self._built_for:
            self._build(bottom, top)
            self._built_for = shape[2:]
            return
        self._reshape_stages(bottom, top)

    def _pooling(self, level: int, height: int, width: int):
        kernel, pad = pyramid_window(level, height, width)
        param = caffe_pb2.LayerParameter(name=f"{self.name}_pool{level}", type="Pooling")
        pool = param.pooling_param
        pool.pool = self.pool_method
        pool.kernel_h, pool.kernel_w = kernel
        pool.stride_h, pool.stride_w = kernel
        pool.pad_h, pool.pad_w = pad
        return create_layer(param, self.phase)

    def _build(self, bottom, top):
        height, width = bottom[0].shape[2:]
        dtype = bottom[0].dtype
        levels = range(self.pyramid_height)
        self.pools = [self._pooling(level, height, width) for level in levels]
        if self.pyramid_height == 1:
            self.stages = [(self.pools[0], bottom, top)]
            self.pools[0].setup_layer(bottom, top)
            return
        split_tops = [Blob(dtype=dtype) for _ in levels]
        pooled = [Blob(dtype=dtype) for _ in levels]
        flat = [Blob(dtype=dtype) for _ in levels]
        split = create_layer(caffe_pb2.LayerParameter(name=f"{self.name}_split", type="Split"))
        self.stages = [(split, bottom, split_tops)]
        for level in levels:
            flatten = create_layer(
                caffe_pb2.LayerParameter(name=f"{self.name}_flatten{level}", type="Flatten")
            )
            self.stages.append((self.pools[level], [split_tops[level]], [pooled[level]]))
            self.stages.append((flatten, [pooled[level]], [flat[level]]))
        concat = create_layer(caffe_pb2.LayerParameter(name=f"{self.name}_concat", type="Concat"))
        self.stages.append((concat, flat, top))
        for layer, stage_bottom, stage_top in self.stages:
            layer.setup_layer(stage_bottom, stage_top)

    def _reshape_stages(self, bottom, top):
        for layer, stage_bottom, stage_top in self.stages:
            layer.reshape(stage_bottom, stage_top)

    def forward(self, bottom, top):
        for layer, stage_bottom, stage_top in self.stages:
            layer.forward(stage_bottom, stage_top)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        for layer, stage_bottom, stage_top in reversed(self.stages):
            layer.backward(stage_top, [True] * len(stage_bottom), stage_bottom)
