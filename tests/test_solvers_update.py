"""The six update rules against an independent float64 numpy reference.

Caffe's least-squares problem (tests/solver_nets.py) is trained for a few steps
and the weights (and, where it is a plain quantity, the history) are compared
with a step-by-step reference written from the published formulas.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import solver_nets as sn

from caffelite.errors import CaffeliteError
from caffelite.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
)

STEPS = 4

#: Per rule: the class, the solver text, and the hyper-parameters for the reference.
RULES = {
    "SGD": (SGDSolver, "momentum: 0.9", dict(lr=0.1, momentum=0.9)),
    "Nesterov": (NesterovSolver, "momentum: 0.9", dict(lr=0.1, momentum=0.9)),
    "AdaGrad": (AdaGradSolver, "delta: 1e-6", dict(lr=0.1, delta=1e-6)),
    "RMSProp": (
        RMSPropSolver,
        "rms_decay: 0.95 delta: 1e-6",
        dict(lr=0.1, rms_decay=0.95, delta=1e-6),
    ),
    "AdaDelta": (
        AdaDeltaSolver,
        "base_lr: 1.0 momentum: 0.95 delta: 1e-6",
        dict(lr=1.0, momentum=0.95, delta=1e-6),
    ),
    "Adam": (
        AdamSolver,
        "base_lr: 0.05 momentum: 0.9 momentum2: 0.999 delta: 1e-8",
        dict(lr=0.05, momentum=0.9, momentum2=0.999, delta=1e-8),
    ),
}

#: Shared solver options: solver text, net ParamSpec text, and reference options.
CONFIGS = {
    "plain": ("", {}, {}),
    "l2": ("weight_decay: 0.1", {}, dict(weight_decay=0.1)),
    "l1": ("weight_decay: 0.1 regularization_type: 'L1'", {}, dict(weight_decay=0.1, l1=True)),
    "multipliers": (
        "weight_decay: 0.1",
        dict(bias_param="lr_mult: 2 decay_mult: 0", weight_param="lr_mult: 0.5"),
        dict(weight_decay=0.1, lr_mult=(0.5, 2.0), decay_mult=(1.0, 0.0)),
    ),
    "clip": ("clip_gradients: 0.1", {}, dict(clip=0.1)),
    "iter_size": ("iter_size: 2", dict(batch_size=2), dict(iter_size=2)),
    # Caffe clips the gradient summed over iter_size passes, before normalising
    "clip_iter_size": (
        "clip_gradients: 0.1 iter_size: 2",
        dict(batch_size=2),
        dict(clip=0.1, iter_size=2),
    ),
}


def reference(
    rule: str,
    x,
    y,
    w0,
    b0,
    steps: int,
    *,
    lr,
    momentum=0.0,
    delta=1e-8,
    rms_decay=0.99,
    momentum2=0.999,
    weight_decay=0.0,
    l1=False,
    lr_mult=(1.0, 1.0),
    decay_mult=(1.0, 1.0),
    clip=-1.0,
    iter_size=1,
):
    """Plain float64 numpy: params [W (1, D), b (1,)] after ``steps`` updates, and the
    history (list of arrays, Caffe's layout)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    params = [w0.astype(np.float64), b0.astype(np.float64)]
    hist = [np.zeros_like(p) for p in params]
    hist2 = [np.zeros_like(p) for p in params]
    chunk = x.shape[0] // iter_size
    for it in range(steps):
        # gradients of sum((x w^T + b - y)^2) / (2 n), summed over iter_size chunks
        grads = [np.zeros_like(p) for p in params]
        for k in range(iter_size):
            xk, yk = x[k * chunk : (k + 1) * chunk], y[k * chunk : (k + 1) * chunk]
            residual = xk @ params[0].T + params[1] - yk[:, None]  # (n, 1)
            grads[0] += residual.T @ xk / chunk
            grads[1] += residual.sum(axis=0) / chunk
        if clip >= 0:  # Caffe clips before normalising by iter_size
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
            if norm > clip:
                grads = [g * (clip / norm) for g in grads]
        grads = [g / iter_size for g in grads]
        for i, p in enumerate(params):
            decay = weight_decay * decay_mult[i]
            grads[i] = grads[i] + decay * (np.sign(p) if l1 else p)
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            rate = lr * lr_mult[i]
            if rule == "SGD":
                hist[i] = momentum * hist[i] + rate * g
                step = hist[i]
            elif rule == "Nesterov":
                old = hist[i]
                hist[i] = momentum * old + rate * g
                step = (1 + momentum) * hist[i] - momentum * old
            elif rule == "AdaGrad":
                hist[i] = hist[i] + g * g
                step = rate * g / (np.sqrt(hist[i]) + delta)
            elif rule == "RMSProp":
                hist[i] = rms_decay * hist[i] + (1 - rms_decay) * g * g
                step = rate * g / (np.sqrt(hist[i]) + delta)
            elif rule == "AdaDelta":
                hist[i] = momentum * hist[i] + (1 - momentum) * g * g
                unscaled = g * np.sqrt((hist2[i] + delta) / (hist[i] + delta))
                hist2[i] = momentum * hist2[i] + (1 - momentum) * unscaled * unscaled
                step = rate * unscaled
            elif rule == "Adam":
                t = it + 1
                hist[i] = momentum * hist[i] + (1 - momentum) * g
                hist2[i] = momentum2 * hist2[i] + (1 - momentum2) * g * g
                correction = np.sqrt(1 - momentum2**t) / (1 - momentum**t)
                step = rate * correction * hist[i] / (np.sqrt(hist2[i]) + delta)
            else:
                raise AssertionError(rule)
            params[i] = p - step
    history = hist + (hist2 if rule in ("AdaDelta", "Adam") else [])
    return params, history


def run(rule: str, config: str, caplog=None):
    cls, rule_text, rule_kwargs = RULES[rule]
    config_text, net_kwargs, ref_kwargs = CONFIGS[config]
    solver = sn.make_solver(cls, f"{rule_text} {config_text}", **net_kwargs)
    w0, b0 = sn.ip_params(solver)
    solver.step(STEPS)
    x, y = sn.problem()
    expected, history = reference(rule, x, y, w0, b0, STEPS, **rule_kwargs, **ref_kwargs)
    return solver, expected, history


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_update_matches_reference(rule, config, caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver, expected, history = run(rule, config)
    weights, bias = sn.ip_params(solver)
    assert weights.dtype == np.float32
    assert solver.iter == STEPS
    np.testing.assert_allclose(weights, expected[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bias, expected[1], rtol=1e-5, atol=1e-7)
    # the weights really moved: a broken rule cannot pass by doing nothing
    w0, b0 = run_initial(rule, config)
    assert np.max(np.abs(weights - w0)) > 1e-4
    assert len(solver.history) == len(history)
    for got, want in zip(solver.history, history, strict=True):
        np.testing.assert_allclose(got.data, want, rtol=1e-4, atol=1e-7)
    if config.startswith("clip"):
        assert "Gradient clipping: scaling down gradients" in caplog.text


def run_initial(rule, config):
    cls, rule_text, _ = RULES[rule]
    config_text, net_kwargs, _ = CONFIGS[config]
    return sn.ip_params(sn.make_solver(cls, f"{rule_text} {config_text}", **net_kwargs))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_iter_size_equals_doubled_batch(rule):
    cls, rule_text, _ = RULES[rule]
    halves = sn.make_solver(cls, f"{rule_text} iter_size: 2 weight_decay: 0.01", batch_size=2)
    whole = sn.make_solver(cls, f"{rule_text} weight_decay: 0.01", batch_size=4)
    for a, b in zip(sn.ip_params(halves), sn.ip_params(whole), strict=True):
        np.testing.assert_array_equal(a, b)
    halves.step(STEPS)
    whole.step(STEPS)
    for a, b in zip(sn.ip_params(halves), sn.ip_params(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)


def test_lr_mult_zero_freezes_param():
    solver = sn.make_solver(SGDSolver, "momentum: 0.9", bias_param="lr_mult: 0")
    _, b0 = sn.ip_params(solver)
    solver.step(3)
    np.testing.assert_array_equal(sn.ip_params(solver)[1], b0)


def test_adam_step_uses_iteration_count():
    """The bias correction uses t = iter + 1 even when resuming mid-way."""
    solver = sn.make_solver(AdamSolver, "momentum: 0.9 base_lr: 0.05")
    w0, b0 = sn.ip_params(solver)
    solver.iter = 10  # as after a restore: the first step now uses t = 11
    solver.step(1)
    x, y = sn.problem()
    residual = x.astype(float) @ w0.T.astype(float) + b0 - y[:, None]
    g = residual.T @ x / 4
    m = 0.1 * g
    v = 0.001 * g * g
    correction = np.sqrt(1 - 0.999**11) / (1 - 0.9**11)
    expected = w0 - 0.05 * correction * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(sn.ip_params(solver)[0], expected, rtol=1e-5)


# ---- Caffe's parameter checks -----------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "text", "message"),
    [
        (AdaGradSolver, "momentum: 0.9", "momentum cannot be used with AdaGrad"),
        (RMSPropSolver, "momentum: 0.5", "momentum cannot be used with RMSProp"),
        (RMSPropSolver, "rms_decay: 1.0", r"rms_decay should lie in \[0, 1\)"),
        (RMSPropSolver, "rms_decay: -0.1", r"rms_decay should lie in \[0, 1\)"),
        (AdamSolver, "momentum: 1.0", "Adam needs momentum"),
        (
            SGDSolver,
            "weight_decay: 0.1 regularization_type: 'L3'",
            "unknown regularization_type 'L3'",
        ),
    ],
)
def test_parameter_checks(cls, text, message):
    with pytest.raises(CaffeliteError, match=message):
        cls(sn.solver_param(text))


def test_regularization_type_ignored_without_decay():
    """Caffe only looks at regularization_type when there is weight decay."""
    solver = sn.make_solver(SGDSolver, "regularization_type: 'L3'")
    solver.step(1)
    assert solver.iter == 1
