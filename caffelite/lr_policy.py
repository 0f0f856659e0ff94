"""Learning-rate schedules (Caffe's SGDSolver::GetLearningRate).

``learning_rate(param, iter, current_step)`` returns ``(rate, current_step)``:
``step`` recomputes the step index from ``iter`` and ``multistep`` advances it by
at most one per call, which is why the solver keeps it (and snapshots it).

=========  ====================================================================
fixed      ``base_lr``
step       ``base_lr * gamma ^ floor(iter / stepsize)``
exp        ``base_lr * gamma ^ iter``
inv        ``base_lr * (1 + gamma * iter) ^ (-power)``
multistep  ``base_lr * gamma ^ current_step``; the step advances when ``iter``
           reaches the next ``stepvalue``
poly       ``base_lr * (1 - iter / max_iter) ^ power``
sigmoid    ``base_lr / (1 + exp(-gamma * (iter - stepsize)))``
=========  ====================================================================
"""

from __future__ import annotations

import logging
import math

from caffelite.errors import CaffeliteError

logger = logging.getLogger("caffelite")

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def _require(condition: bool, policy: str, what: str, value) -> None:
    if not condition:
        raise CaffeliteError(f'lr_policy "{policy}" needs {what}; got {value}')


def learning_rate(param, iteration: int, current_step: int = 0) -> tuple[float, int]:
    """The rate for ``iteration`` under ``param.lr_policy``, and the new current step."""
    policy = param.lr_policy
    base_lr = param.base_lr
    gamma = param.gamma
    if policy == "fixed":
        return base_lr, current_step
    if policy == "step":
        _require(param.stepsize > 0, policy, "stepsize > 0", param.stepsize)
        _require(gamma >= 0, policy, "gamma >= 0", gamma)
        current_step = iteration // param.stepsize
        return base_lr * math.pow(gamma, current_step), current_step
    if policy == "exp":
        _require(gamma >= 0, policy, "gamma >= 0", gamma)
        return base_lr * math.pow(gamma, iteration), current_step
    if policy == "inv":
        _require(gamma >= 0, policy, "gamma >= 0", gamma)
        return base_lr * math.pow(1.0 + gamma * iteration, -param.power), current_step
    if policy == "multistep":
        steps = param.stepvalue
        if current_step < len(steps) and iteration >= steps[current_step]:
            current_step += 1
            logger.info("MultiStep Status: Iteration %d, step = %d", iteration, current_step)
        _require(gamma >= 0, policy, "gamma >= 0", gamma)
        return base_lr * math.pow(gamma, current_step), current_step
    if policy == "poly":
        _require(param.max_iter > 0, policy, "max_iter > 0", param.max_iter)
        if iteration > param.max_iter:
            raise CaffeliteError(
                f'lr_policy "poly" is undefined past max_iter: iteration {iteration} > '
                f"max_iter {param.max_iter} (raise max_iter to train longer)"
            )
        return base_lr * math.pow(1.0 - iteration / param.max_iter, param.power), current_step
    if policy == "sigmoid":
        _require(gamma >= 0, policy, "gamma >= 0", gamma)
        _require(param.stepsize > 0, policy, "stepsize > 0", param.stepsize)
        exponent = -gamma * (iteration - param.stepsize)
        if exponent > 700.0:  # exp overflows a double: the rate is 0 to double precision
            return 0.0, current_step
        return base_lr / (1.0 + math.exp(exponent)), current_step
    if not policy:
        raise CaffeliteError(f"the solver has no lr_policy; set one of: {', '.join(POLICIES)}")
    raise CaffeliteError(f"unknown lr_policy {policy!r}; known policies: {', '.join(POLICIES)}")
