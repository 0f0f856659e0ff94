"""EuclideanLoss: half the mean squared distance, the least-squares regression loss.

``loss = sum((x - y)^2) / (2 N)`` with ``N`` the first dimension; both bottoms
may need a gradient (a target can be a learned quantity too), so unlike other
loss layers force_backward may reach bottom 1.
"""

from __future__ import annotations

from caffelite.layer import register_layer
from caffelite.layers.loss import LossLayer


def euclidean_forward(xp, x, y, diff) -> float:
    """Fill ``diff = x - y`` and return ``<diff, diff>`` (the unnormalised sum)."""
    xp.subtract(x, y, out=diff)
    flat = diff.reshape(-1)
    return float(xp.dot(flat, flat))


def _num(blob) -> int:
    """The batch size: the first dimension (1 for a scalar)."""
    return blob.shape[0] if blob.num_axes else 1


@register_layer("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """Caffe's EuclideanLossLayer: both inputs need the same count per sample."""

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Either input may receive a gradient."""
        return True

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        if bottom[0].count(1) != bottom[1].count(1):
            raise self.error(
                "inputs must have the same number of values per sample; got bottom[0] of "
                f"shape {bottom[0].shape} and bottom[1] of shape {bottom[1].shape}"
            )
        diff = getattr(self, "_diff", None)
        if diff is None or diff.shape != bottom[0].shape or diff.dtype != bottom[0].dtype:
            self._diff = self.xp.empty(bottom[0].shape, dtype=bottom[0].dtype)

    def forward(self, bottom, top) -> None:
        y = bottom[1].data.reshape(bottom[0].shape)
        dot = euclidean_forward(self.xp, bottom[0].data, y, self._diff)
        top[0].data[...] = dot / _num(bottom[0]) / 2.0

    def backward(self, top, propagate_down, bottom) -> None:
        weight = self.loss_weight_of(top)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * weight / _num(bottom[i])
                self.xp.multiply(self._diff.reshape(bottom[i].shape), alpha, out=bottom[i].diff)
