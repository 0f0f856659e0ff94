"""Softmax and SoftmaxWithLoss (the usual classification loss).

Both see the bottom as an ``(outer, channels, inner)`` array around the softmax
axis, so the same code serves (N, C) scores and (N, C, H, W) score maps.
"""

from __future__ import annotations

import numpy

from caffelite.blob import Blob
from caffelite.layer import Layer, register_layer
from caffelite.layers.loss import LossLayer, get_normalizer, int_labels, normalization_mode
from caffelite.shapes import canonical_axis, labelled_axis, split_axis

#: Caffe clips probabilities at FLT_MIN before the log, in every precision.
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def softmax(xp, x, out, scratch) -> None:
    """``out = softmax(x)`` along axis 1 of (outer, C, inner) arrays.

    Subtracting the per-position maximum keeps ``exp`` from overflowing; the
    result is unchanged. ``out`` may be ``x`` itself. ``scratch`` is an
    (outer, 1, inner) buffer for the maximum and then the sum.
    """
    xp.max(x, axis=1, keepdims=True, out=scratch)
    xp.subtract(x, scratch, out=out)
    xp.exp(out, out=out)
    xp.sum(out, axis=1, keepdims=True, out=scratch)
    out /= scratch


def softmax_backward(xp, y, dy, dx, scratch, product) -> None:
    """``dx = y * (dy - sum_c(dy * y))`` along axis 1; ``dx`` may alias ``dy``.

    ``product`` is a buffer shaped like ``y`` for the elementwise product.
    """
    xp.multiply(dy, y, out=product)
    xp.sum(product, axis=1, keepdims=True, out=scratch)
    xp.subtract(dy, scratch, out=dx)
    dx *= y


@register_layer("Softmax")
class SoftmaxLayer(Layer):
    """``top = exp(x) / sum(exp(x))`` along ``softmax_param.axis`` (default 1)."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top) -> None:
        self.axis = canonical_axis(self, bottom[0], self.layer_param.softmax_param.axis)
        self.dims = split_axis(bottom[0].shape, self.axis)
        top[0].reshape(bottom[0].shape)
        outer, _, inner = self.dims
        scratch = getattr(self, "_scratch", None)
        if scratch is None or scratch.shape != (outer, 1, inner) or scratch.dtype != top[0].dtype:
            self._scratch = self.xp.empty((outer, 1, inner), dtype=top[0].dtype)

    def forward(self, bottom, top) -> None:
        softmax(
            self.xp,
            bottom[0].data.reshape(self.dims),
            top[0].data.reshape(self.dims),
            self._scratch,
        )

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        product = getattr(self, "_product", None)
        if product is None or product.shape != self.dims or product.dtype != top[0].dtype:
            # made on the first backward only: inference never pays for it
            self._product = product = self.xp.empty(self.dims, dtype=top[0].dtype)
        softmax_backward(
            self.xp,
            top[0].data.reshape(self.dims),
            top[0].diff.reshape(self.dims),
            bottom[0].diff.reshape(self.dims),
            self._scratch,
            product,
        )


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLossLayer(LossLayer):
    """Multinomial logistic loss of the softmax of bottom 0 against integer labels.

    ``loss = -sum(log(max(prob[label], FLT_MIN))) / normalizer`` over the
    positions whose label is not ``loss_param.ignore_label``. Labels are bottom 1,
    one per (outer, inner) position. An optional top 1 exposes the probabilities.
    """

    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top) -> None:
        loss_param = self.layer_param.loss_param
        self.has_ignore_label = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        self.normalization = normalization_mode(loss_param)
        self._prob = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.axis, self.dims = labelled_axis(
            self, bottom[0], bottom[1], self.layer_param.softmax_param.axis, "softmax axis"
        )
        outer, _, inner = self.dims
        if self._prob is None or self._prob.dtype != bottom[0].dtype:
            self._prob = Blob(dtype=bottom[0].dtype)
        self._prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
            top[1].share_data(self._prob)
        xp = self.xp
        scratch = getattr(self, "_scratch", None)
        if (
            scratch is None
            or scratch.shape != (outer, 1, inner)
            or scratch.dtype != bottom[0].dtype
        ):
            self._scratch = xp.empty((outer, 1, inner), dtype=bottom[0].dtype)
            self._outer_index = xp.arange(outer)[:, None]
            self._inner_index = xp.arange(inner)[None, :]

    def _labels(self, bottom):
        """Integer labels of shape (outer, inner), ignored ones replaced by 0, and
        the mask of valid positions (None when nothing can be ignored)."""
        outer, channels, inner = self.dims
        return int_labels(
            self,
            bottom[1].data.reshape(outer, inner),
            channels,
            self.ignore_label if self.has_ignore_label else None,
            f" (the {channels} channels of axis {self.axis} of the prediction of shape "
            f"{bottom[0].shape})",
        )

    def forward(self, bottom, top) -> None:
        xp = self.xp
        dims = self.dims
        prob = self._prob.data.reshape(dims)
        softmax(xp, bottom[0].data.reshape(dims), prob, self._scratch)
        labels, valid = self._labels(bottom)
        picked = xp.take_along_axis(prob, labels[:, None, :], axis=1)[:, 0, :]
        log_prob = xp.log(xp.maximum(picked, FLT_MIN))
        if valid is None:
            loss = -log_prob.sum()
            count = log_prob.size
        else:
            loss = -(log_prob * valid).sum()
            count = int(valid.sum())
        top[0].data[...] = loss / get_normalizer(self.normalization, dims[0], dims[2], count)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        outer, _, inner = self.dims
        diff = bottom[0].diff.reshape(self.dims)
        diff[...] = self._prob.data.reshape(self.dims)
        labels, valid = self._labels(bottom)
        diff[self._outer_index, labels, self._inner_index] -= 1
        if valid is None:
            count = outer * inner
        else:
            diff *= valid[:, None, :]
            count = int(valid.sum())
        diff *= self.loss_weight_of(top) / get_normalizer(self.normalization, outer, inner, count)
