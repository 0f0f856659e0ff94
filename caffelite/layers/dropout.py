"""Dropout: in TRAIN keep each unit with probability ``1 - p``; in TEST pass through.

With ``scale_train`` (the default) kept units are scaled by ``1 / (1 - p)`` in TRAIN
so TEST is the identity; without it TRAIN does not scale and TEST multiplies by
``1 - p`` instead. The mask comes from the shared generator (``caffelite.rng``) and
is kept for backward, which is ``dy * mask * scale``. ``scale_train`` is not in
BVLC's schema (it comes from Caffe forks); it is read when the schema has it.
"""

from __future__ import annotations

from caffelite.layer import TRAIN, register_layer
from caffelite.layers.neuron import NeuronLayer
from caffelite.rng import get_rng


def draw_keep_mask(xp, shape, keep_probability: float, dtype):
    """Bernoulli(``keep_probability``) as 0/1 values of ``dtype`` (drawn on the host)."""
    kept = get_rng().random(size=shape) < keep_probability
    return xp.asarray(kept, dtype=dtype)


def dropout_apply(xp, x, y, mask, scale: float) -> None:
    """``y = x * mask * scale``; ``y`` may be ``x``."""
    xp.multiply(x, mask, out=y)
    if scale != 1:
        y *= scale


@register_layer("Dropout")
class DropoutLayer(NeuronLayer):
    def setup(self, bottom, top):
        super().setup(bottom, top)
        param = self.layer_param.dropout_param
        self.ratio = float(param.dropout_ratio)
        if not 0 <= self.ratio < 1:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.scale = 1.0 / (1.0 - self.ratio)
        has_scale_train = "scale_train" in param.DESCRIPTOR.fields_by_name
        self.scale_train = bool(param.scale_train) if has_scale_train else True
        self.mask = None

    def _factor(self) -> float:
        """The multiplier applied with the mask (TRAIN) or alone (TEST)."""
        if self.phase == TRAIN:
            return self.scale if self.scale_train else 1.0
        return 1.0 if self.scale_train else 1.0 - self.ratio

    def compute(self, x, y):
        xp = self.xp
        if self.phase == TRAIN:
            self.mask = draw_keep_mask(xp, x.shape, 1.0 - self.ratio, x.dtype)
            dropout_apply(xp, x, y, self.mask, self._factor())
        else:
            xp.multiply(x, self._factor(), out=y)

    def gradient(self, x, y, dy, dx):
        xp = self.xp
        if self.phase == TRAIN:
            if self.mask is None or self.mask.shape != dy.shape:
                raise self.error("backward before forward: no dropout mask for this shape")
            dropout_apply(xp, dy, dx, self.mask, self._factor())
        else:
            xp.multiply(dy, self._factor(), out=dx)
