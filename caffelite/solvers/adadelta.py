"""AdaDelta (Caffe's AdaDeltaSolver): steps scaled by the ratio of the RMS of past
steps to the RMS of past gradients. ``momentum`` is the decay of both averages;
the history keeps the gradient averages first, then the step averages."""

from __future__ import annotations

from caffelite import backend
from caffelite.solver import register_solver
from caffelite.solvers.sgd import SGDSolver


def adadelta_update(
    xp,
    diff,
    grad_history,
    step_history,
    scratch,
    temp,
    momentum: float,
    delta: float,
    local_rate: float,
) -> None:
    """``Eg = m Eg + (1-m) g^2``; ``s = g * sqrt((Es + delta) / (Eg + delta))``;
    ``Es = m Es + (1-m) s^2``; step ``local_rate * s``."""
    xp.multiply(diff, diff, out=scratch)
    scratch *= 1.0 - momentum
    grad_history *= momentum
    grad_history += scratch
    xp.add(step_history, delta, out=scratch)
    xp.add(grad_history, delta, out=temp)
    scratch /= temp
    xp.sqrt(scratch, out=scratch)
    diff *= scratch
    xp.multiply(diff, diff, out=scratch)
    scratch *= 1.0 - momentum
    step_history *= momentum
    step_history += scratch
    diff *= local_rate


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """Zeiler's AdaDelta; Caffe keeps ``base_lr`` as an extra factor (use 1.0)."""

    history_per_param = 2

    def compute_update_value(self, param_id: int, rate: float) -> None:
        blob = self.net.learnable_params[param_id]
        local_rate = rate * self.net.params_lr[param_id]
        offset = len(self.net.learnable_params)
        adadelta_update(
            backend.xp(),
            blob.diff,
            self.history[param_id].data,
            self.history[offset + param_id].data,
            self._update[param_id],
            self._temp[param_id],
            self.param.momentum,
            self.param.delta,
            local_rate,
        )
