"""MVN: mean-variance normalisation of each image (or each image's channel).

Groups are rows of ``(N, C*H*W)`` with ``across_channels``, else of ``(N*C, H*W)``.
Each group gets its mean subtracted and, with ``normalize_variance`` (default),
is divided by ``std + eps`` (Caffe adds ``eps``, default 1e-9, to the standard
deviation, not to the variance). Like Caffe, the layer reads the blob through
the legacy (num, channels, height, width) accessors: bottoms may have up to 4
axes, and the top is given the 4-axis shape (N, C, H, W) (missing axes are 1).
In place works (the mean is taken before the output is written; backward copies
the top diff first), which Caffe's own backward does not get right.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


def normalization_backward(xp, y, dy, std, dx, tmp, mean) -> None:
    """Gradient of ``y = (x - mean(x)) / std``: ``dx = (dy - mean(dy) - y * mean(dy * y)) / std``.

    ``mean`` averages over each normalised group, keeping dims for broadcasting (MVN's rows;
    BatchNorm's channels over batch and positions). ``std`` already includes ``eps``;
    ``dx`` may not be ``dy``.
    """
    xp.multiply(dy, y, out=tmp)
    mean_dy_y = mean(tmp)
    mean_dy = mean(dy)
    xp.multiply(y, mean_dy_y, out=dx)
    dx += mean_dy
    xp.subtract(dy, dx, out=dx)
    dx /= std


def _row_mean(a):
    return a.mean(axis=1, keepdims=True)


@register_layer("MVN")
class MVNLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        if bottom[0].num_axes > 4:
            raise self.error(
                f"reads its bottom as (num, channels, height, width): at most 4 axes, "
                f"got shape {bottom[0].shape}"
            )
        b = bottom[0]
        top[0].reshape(b.num, b.channels, b.height, b.width)
        groups = b.num if self.across_channels else b.num * b.channels
        self.rows = (groups, b.count // groups if groups else 0)
        tmp = getattr(self, "_tmp", None)
        if tmp is None or tmp.shape != self.rows or tmp.dtype != b.dtype:
            self._tmp = self.xp.empty(self.rows, dtype=b.dtype)
            self._diff_copy = None

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.rows)
        y = top[0].data.reshape(self.rows)
        xp.subtract(x, x.mean(axis=1, keepdims=True), out=y)
        if self.normalize_variance:
            xp.multiply(y, y, out=self._tmp)
            self.std = xp.sqrt(self._tmp.mean(axis=1, keepdims=True))
            self.std += self.eps
            y /= self.std

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = top[0].diff.reshape(self.rows)
        dx = bottom[0].diff.reshape(self.rows)
        if self.normalize_variance and top[0] is bottom[0]:
            # in place dx is dy, which the gradient reads after it starts writing dx
            if self._diff_copy is None:
                self._diff_copy = xp.empty_like(dy)
            self._diff_copy[...] = dy
            dy = self._diff_copy
        if self.normalize_variance:
            y = top[0].data.reshape(self.rows)
            normalization_backward(xp, y, dy, self.std, dx, self._tmp, _row_mean)
        else:
            xp.subtract(dy, dy.mean(axis=1, keepdims=True), out=dx)
