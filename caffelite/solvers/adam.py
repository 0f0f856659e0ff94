"""Adam (Caffe's AdamSolver): bias-corrected moving averages of the gradient
(``momentum`` = beta1) and of its square (``momentum2`` = beta2); the history
keeps the first moments, then the second moments."""

from __future__ import annotations

import math

from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.solver import register_solver
from caffelite.solvers.sgd import SGDSolver


def adam_correction(beta1: float, beta2: float, t: int) -> float:
    """The bias correction ``sqrt(1 - beta2^t) / (1 - beta1^t)`` at step ``t`` (from 1)."""
    return math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)


def adam_update(
    xp, diff, m, v, scratch, beta1: float, beta2: float, eps: float, step_size: float
) -> None:
    """``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``; step
    ``step_size * m / (sqrt(v) + eps)`` with ``step_size = local_rate * correction``."""
    xp.multiply(diff, 1.0 - beta1, out=scratch)
    m *= beta1
    m += scratch
    xp.multiply(diff, diff, out=scratch)
    scratch *= 1.0 - beta2
    v *= beta2
    v += scratch
    xp.sqrt(v, out=scratch)
    scratch += eps
    xp.divide(m, scratch, out=scratch)
    xp.multiply(scratch, step_size, out=diff)


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Kingma and Ba's Adam with ``momentum`` (beta1), ``momentum2`` (beta2) and
    ``delta`` (epsilon); the step count is ``iter + 1``."""

    history_per_param = 2

    def check_param(self) -> None:
        p = self.param
        if not (p.momentum < 1 and p.momentum2 < 1):
            raise CaffeliteError(
                f"Adam needs momentum (beta1) and momentum2 (beta2) below 1; got momentum: "
                f"{p.momentum:g}, momentum2: {p.momentum2:g}"
            )

    def compute_update_value(self, param_id: int, rate: float) -> None:
        p = self.param
        blob = self.net.learnable_params[param_id]
        local_rate = rate * self.net.params_lr[param_id]
        offset = len(self.net.learnable_params)
        correction = adam_correction(p.momentum, p.momentum2, self.iter + 1)
        adam_update(
            backend.xp(),
            blob.diff,
            self.history[param_id].data,
            self.history[offset + param_id].data,
            self._update[param_id],
            p.momentum,
            p.momentum2,
            p.delta,
            local_rate * correction,
        )
