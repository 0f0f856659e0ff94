"""Im2col: a convolution's columns as a blob (Caffe's Im2colLayer).

The top is ``(N..., C * prod(kernel), *out)``: for each image, every window of every
channel, channel-major then kernel cell, over the output positions. That is the
batch-first column layout of :mod:`caffelite.im2col` exactly, so forward unfolds
straight into the top and backward folds the top's diff straight into the bottom's.
The window comes from ``convolution_param`` as for Convolution (any number of
spatial axes, ``force_nd_im2col``); ``num_output``, ``group`` and the fillers are unused.
"""

from __future__ import annotations

import math

from caffelite import im2col
from caffelite.im2col import BATCH_FIRST
from caffelite.layer import Layer, register_layer
from caffelite.layers import conv_geometry


@register_layer("Im2col")
class Im2colLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.channel_axis, axes = conv_geometry.spatial_axes(self, bottom[0], param)
        where = conv_geometry.describe_bottom(self, bottom[0], self.channel_axis)
        if axes < 1:
            raise self.error(f"needs at least one spatial axis after the channel axis: {where}")
        self.num_axes = bottom[0].num_axes
        self.geometry = conv_geometry.parse(self, param, axes, where)
        self.force_nd = param.force_nd_im2col

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("does not allow in-place computation (top and bottom are one blob)")
        shape, axis = bottom[0].shape, self.channel_axis
        if len(shape) != self.num_axes:
            raise self.error(f"bottom must keep {self.num_axes} axes, got shape {shape}")
        where = conv_geometry.describe_bottom(self, bottom[0], axis)
        self.num, self.channels = math.prod(shape[:axis]), shape[axis]
        self.spatial = shape[axis + 1 :]
        self.out = conv_geometry.conv_output_shape(self, self.geometry, self.spatial, where)
        rows = self.channels * math.prod(self.geometry.kernel)
        top[0].reshape(shape[:axis] + (rows,) + self.out)

    def _views(self, image_array, col_array):
        images = image_array.reshape(self.num, self.channels, *self.spatial)
        shape = im2col.col_shape(BATCH_FIRST, self.num, self.channels, self.out, self.geometry)
        return images, col_array.reshape(shape)

    def forward(self, bottom, top):
        x, col = self._views(bottom[0].data, top[0].data)
        im2col.im2col(x, BATCH_FIRST, self.geometry, col, self.force_nd)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx, dcol = self._views(bottom[0].diff, top[0].diff)
            im2col.col2im(dcol, BATCH_FIRST, self.geometry, dx, self.force_nd)
