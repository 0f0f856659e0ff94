"""ArgMax: the indices (and optionally values) of the ``top_k`` largest entries.

Without ``axis`` each item (everything after axis 0) is searched as one vector and
the top is ``(N, 1, top_k)`` of indices, or ``(N, 2, top_k)`` with the values in
row 1 when ``out_max_val`` (padded with 1s to the bottom's number of axes). With
``axis`` the top keeps the bottom's shape with that axis cut to ``top_k``, holding
values if ``out_max_val`` else indices. Ordering is Caffe's: by value descending and,
among equal values, by index descending (its partial sort compares (value, index)
pairs). No gradient.
"""

from __future__ import annotations

import math

from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis


def top_k_along_1(xp, x, k: int):
    """(indices, values) of the ``k`` largest entries along axis 1 of a 3-d array.

    Equal values put the larger index first: sorting the reversed axis stably
    keeps later entries ahead of earlier ones among equals.
    """
    dim = x.shape[1]
    order = xp.argsort(-x[:, ::-1, :], axis=1, kind="stable")[:, :k, :]
    indices = (dim - 1) - order
    return indices, xp.take_along_axis(x, indices, axis=1)


@register_layer("ArgMax")
class ArgMaxLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allow_force_backward_bottoms = False

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.argmax_param
        self.top_k = k = param.top_k
        self.out_max_val = param.out_max_val
        self.has_axis = param.HasField("axis")
        shape = bottom[0].shape
        if k < 1:
            raise self.error(f"top_k must be at least 1; got {k}")
        if self.has_axis:
            axis = canonical_axis(self, bottom[0], param.axis)
            if k > shape[axis]:
                raise self.error(
                    f"top_k {k} exceeds the size {shape[axis]} of axis {axis} of the bottom "
                    f"of shape {shape}"
                )
            self.dims = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))
            top[0].reshape(shape[:axis] + (k,) + shape[axis + 1 :])
        else:
            per_item = math.prod(shape[1:])
            if k > per_item:
                raise self.error(
                    f"top_k {k} exceeds the {per_item} values per item of the bottom of "
                    f"shape {shape}"
                )
            self.dims = (shape[0], per_item, 1)
            top_shape = [1] * max(len(shape), 3)
            top_shape[0] = shape[0]
            top_shape[1] = 2 if self.out_max_val else 1
            top_shape[2] = k
            top[0].reshape(top_shape)

    def forward(self, bottom, top) -> None:
        indices, values = top_k_along_1(self.xp, bottom[0].data.reshape(self.dims), self.top_k)
        outer, _, inner = self.dims
        if self.has_axis:
            out = top[0].data.reshape(outer, self.top_k, inner)
            out[...] = values if self.out_max_val else indices
            return
        out = top[0].data.reshape(outer, 2 if self.out_max_val else 1, self.top_k)
        out[:, 0, :] = indices[:, :, 0]
        if self.out_max_val:
            out[:, 1, :] = values[:, :, 0]

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            raise self.error("has no gradient: cannot backpropagate to its bottom")
