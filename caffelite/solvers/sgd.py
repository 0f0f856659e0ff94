"""SGD with momentum and Nesterov's accelerated gradient (Caffe's SGDSolver, NesterovSolver).

The history holds the previous step ``v``; the step taken is what ends up in
the parameter's diff, which ``Net.update`` subtracts from the weights.
"""

from __future__ import annotations

from caffelite import backend
from caffelite.solver import Solver, register_solver


def sgd_update(xp, diff, history, scratch, momentum: float, local_rate: float) -> None:
    """``v = momentum * v + local_rate * g``; the step is ``v``."""
    xp.multiply(diff, local_rate, out=scratch)
    history *= momentum
    history += scratch
    diff[...] = history


def nesterov_update(xp, diff, history, previous, momentum: float, local_rate: float) -> None:
    """Update ``v`` as SGD does, then step ``(1 + momentum) * v - momentum * v_old``:
    undo the previous momentum step and over-step along the new one."""
    previous[...] = history
    diff *= local_rate
    history *= momentum
    history += diff
    xp.multiply(history, 1.0 + momentum, out=diff)
    previous *= momentum
    diff -= previous


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (``momentum``, default 0)."""

    #: The step rule; Nesterov differs only here.
    update_rule = staticmethod(sgd_update)

    @property
    def lr(self) -> float:
        """The learning rate at the current iteration (pycaffe's ``SGDSolver.lr``)."""
        return self.get_learning_rate()

    def compute_update_value(self, param_id: int, rate: float) -> None:
        self.update_rule(
            backend.xp(),
            self.net.learnable_params[param_id].diff,
            self.history[param_id].data,
            self._update[param_id],
            self.param.momentum,
            rate * self.net.params_lr[param_id],
        )


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient, in Caffe's "step back then over-step" form."""

    update_rule = staticmethod(nesterov_update)
