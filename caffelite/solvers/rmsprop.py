"""RMSProp (Caffe's RMSPropSolver): AdaGrad with a decaying average of squared
gradients instead of their sum. Caffe forbids momentum with it."""

from __future__ import annotations

from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.solver import register_solver
from caffelite.solvers.sgd import SGDSolver


def rmsprop_update(
    xp, diff, history, scratch, rms_decay: float, delta: float, local_rate: float
) -> None:
    """``h = rms_decay * h + (1 - rms_decay) * g^2``;
    step ``local_rate * g / (sqrt(h) + delta)``."""
    xp.multiply(diff, diff, out=scratch)
    scratch *= 1.0 - rms_decay
    history *= rms_decay
    history += scratch
    xp.sqrt(history, out=scratch)
    scratch += delta
    xp.divide(diff, scratch, out=scratch)
    xp.multiply(scratch, local_rate, out=diff)


@register_solver("RMSProp")
class RMSPropSolver(SGDSolver):
    """Tieleman and Hinton's RMSProp with ``rms_decay`` and ``delta``."""

    def check_param(self) -> None:
        p = self.param
        if p.momentum != 0:
            raise CaffeliteError(
                f"momentum cannot be used with RMSProp (got momentum: {p.momentum:g}); "
                "remove it or set it to 0"
            )
        if not 0 <= p.rms_decay < 1:
            raise CaffeliteError(f"rms_decay should lie in [0, 1) for RMSProp; got {p.rms_decay:g}")

    def compute_update_value(self, param_id: int, rate: float) -> None:
        blob = self.net.learnable_params[param_id]
        local_rate = rate * self.net.params_lr[param_id]
        rmsprop_update(
            backend.xp(),
            blob.diff,
            self.history[param_id].data,
            self._update[param_id],
            self.param.rms_decay,
            self.param.delta,
            local_rate,
        )
