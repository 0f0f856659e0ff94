"""AdaGrad (Caffe's AdaGradSolver): per-element rates shrinking with the summed
squared gradients. Caffe forbids momentum with it."""

from __future__ import annotations

from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.solver import register_solver
from caffelite.solvers.sgd import SGDSolver


def adagrad_update(xp, diff, history, scratch, delta: float, local_rate: float) -> None:
    """``h += g^2``; step ``local_rate * g / (sqrt(h) + delta)``."""
    xp.multiply(diff, diff, out=scratch)
    history += scratch
    xp.sqrt(history, out=scratch)
    scratch += delta
    xp.divide(diff, scratch, out=scratch)
    xp.multiply(scratch, local_rate, out=diff)


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    """Duchi et al.'s AdaGrad; ``delta`` keeps the division finite."""

    def check_param(self) -> None:
        if self.param.momentum != 0:
            raise CaffeliteError(
                f"momentum cannot be used with AdaGrad (got momentum: {self.param.momentum:g}); "
                "remove it or set it to 0"
            )

    def compute_update_value(self, param_id: int, rate: float) -> None:
        blob = self.net.learnable_params[param_id]
        local_rate = rate * self.net.params_lr[param_id]
        adagrad_update(
            backend.xp(),
            blob.diff,
            self.history[param_id].data,
            self._update[param_id],
            self.param.delta,
            local_rate,
        )
