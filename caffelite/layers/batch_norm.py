"""BatchNorm: normalise each channel (axis 1) to zero mean and unit variance.

Statistics are over the batch and all spatial positions (``m = N * H * W`` values
per channel). Caffe's BatchNorm has no scale/shift of its own (a Scale layer with
``bias_term`` follows it) and stores three blobs, all excluded from learning:

* ``blobs[0]``: running sum of means, ``maf * blobs[0] + mean``
* ``blobs[1]``: running sum of variances, ``maf * blobs[1] + m / (m - 1) * var``
* ``blobs[2]``: shape (1,), the normaliser, ``maf * blobs[2] + 1``

With ``use_global_stats`` (the default in TEST) the stored estimates are
``blobs[i] / blobs[2]`` (0 when ``blobs[2]`` is 0). Like Caffe, setup appends
``param { lr_mult: 0 }`` for each blob, and refuses a non-zero ``lr_mult``.
"""

from __future__ import annotations

from caffelite import kernels
from caffelite.layer import TEST, Layer, register_layer
from caffelite.layers.mvn import normalization_backward


def channel_mean(a):
    """Per-channel mean of an (N, C, S) array, kept as (1, C, 1) for broadcasting."""
    return a.mean(axis=(0, 2), keepdims=True)


@register_layer("BatchNorm")
class BatchNormLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.use_global_stats = (
            bool(p.use_global_stats) if p.HasField("use_global_stats") else self.phase == TEST
        )
        self.eps = float(p.eps)
        if bottom[0].num_axes == 0:
            raise self.error("needs a bottom with at least one axis (N, ...), got a scalar")
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        channels = (self.channels,)
        self.make_param_blobs(
            [("mean", channels, None), ("variance", channels, None), ("scale factor", (1,), None)]
        )
        # The statistics are not learned: mask them with lr_mult 0, as Caffe does.
        for i in range(len(self.blobs)):
            if i == len(self.layer_param.param):
                self.layer_param.param.add(lr_mult=0.0)
            elif self.layer_param.param[i].lr_mult != 0:
                raise self.error(
                    f"param {i} has lr_mult {self.layer_param.param[i].lr_mult}: batch "
                    "normalization statistics cannot be learned (use lr_mult: 0)"
                )
        self.param_propagate_down = [False] * len(self.blobs)

    def _view(self, blob):
        """The blob's (N, C, S) view; a 1-axis blob is one channel of N values."""
        n = blob.shape[0]
        return blob.reshape(n, self.channels, -1) if blob.ndim > 1 else blob.reshape(n, 1, 1)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        channels = 1 if len(shape) == 1 else shape[1]
        if channels != self.channels:
            raise self.error(
                f"bottom has {channels} channels (shape {shape}); the layer was set up "
                f"for {self.channels}"
            )
        if top[0] is not bottom[0]:
            top[0].reshape(shape)
        if self.use_global_stats:
            return  # a per-channel affine map: backward needs nothing kept from forward
        xp, dtype = self.xp, bottom[0].dtype
        if (
            getattr(self, "x_norm", None) is None
            or self.x_norm.shape != shape
            or (self.x_norm.dtype != dtype)
        ):
            self.x_norm = xp.empty(shape, dtype=dtype)
            self._tmp = xp.empty(shape, dtype=dtype)
            self._diff_copy = None

    def forward(self, bottom, top):
        xp = self.xp
        x = self._view(bottom[0].data)
        y = self._view(top[0].data)
        if self.use_global_stats:
            kernels.channel_normalize(x, y, *self.global_statistics())  # one pass
            return
        mean = channel_mean(x)
        xp.subtract(x, mean, out=y)
        tmp = self._view(self._tmp)
        xp.multiply(y, y, out=tmp)
        var = channel_mean(tmp)
        self._update_running_stats(mean, var, bottom[0].count // self.channels)
        self.std = xp.sqrt(var + self.eps)
        y /= self.std
        # kept for backward: a later in-place layer may overwrite the top
        self.x_norm[...] = top[0].data

    def global_statistics(self):
        """``(mean, std)`` per channel from the stored estimates (``std`` with ``eps``,
        kept for backward), for a forward with ``use_global_stats``."""
        stored = float(self.blobs[2].data[0])
        factor = 0.0 if stored == 0 else 1.0 / stored
        self.std = self.xp.sqrt(self.blobs[1].data * factor + self.eps)
        return self.blobs[0].data * factor, self.std

    def _update_running_stats(self, mean, var, m: int) -> None:
        maf = self.moving_average_fraction
        correction = m / (m - 1) if m > 1 else 1.0
        self.blobs[2].data[...] *= maf
        self.blobs[2].data[...] += 1
        self.blobs[0].data[...] *= maf
        self.blobs[0].data[...] += mean.reshape(-1)
        self.blobs[1].data[...] *= maf
        self.blobs[1].data[...] += correction * var.reshape(-1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self.use_global_stats:  # elementwise, so in place (dx is dy) needs no copy
            kernels.channel_normalize(self._view(dy), self._view(bottom[0].diff), None, self.std)
            return
        if top[0] is bottom[0]:
            # in place dx is dy: work from a copy of the top diff
            if self._diff_copy is None:
                self._diff_copy = self.xp.empty_like(dy)
            self._diff_copy[...] = dy
            dy = self._diff_copy
        dy = self._view(dy)
        dx = self._view(bottom[0].diff)
        normalization_backward(
            self.xp, self._view(self.x_norm), dy, self.std, dx, self._view(self._tmp), channel_mean
        )
