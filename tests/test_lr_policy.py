"""Learning-rate policies against their formulas (Caffe's GetLearningRate)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import solver_nets as sn
from google.protobuf import text_format

from caffelite.errors import CaffeliteError
from caffelite.lr_policy import learning_rate
from caffelite.proto import caffe_pb2
from caffelite.solvers import SGDSolver

ITERS = [0, 1, 7, 99, 100, 101, 250, 999]


def param(text: str):
    p = caffe_pb2.SolverParameter()
    text_format.Merge(text, p)
    return p


def f32(value: float) -> float:
    """Solver fields are float in caffe.proto: the formulas see float32 values."""
    return float(np.float32(value))


@pytest.mark.parametrize(
    ("text", "formula"),
    [
        ("lr_policy: 'fixed' base_lr: 0.01", lambda it: f32(0.01)),
        (
            "lr_policy: 'step' base_lr: 0.01 gamma: 0.1 stepsize: 100",
            lambda it: f32(0.01) * f32(0.1) ** (it // 100),
        ),
        ("lr_policy: 'exp' base_lr: 0.01 gamma: 0.99", lambda it: f32(0.01) * f32(0.99) ** it),
        (
            "lr_policy: 'inv' base_lr: 0.01 gamma: 0.0001 power: 0.75",
            lambda it: f32(0.01) * (1 + f32(0.0001) * it) ** (-0.75),
        ),
        (
            "lr_policy: 'poly' base_lr: 0.01 power: 2 max_iter: 1000",
            lambda it: f32(0.01) * (1 - it / 1000) ** 2,
        ),
        (
            "lr_policy: 'sigmoid' base_lr: 0.01 gamma: 0.05 stepsize: 100",
            lambda it: f32(0.01) / (1 + math.exp(-f32(0.05) * (it - 100))),
        ),
    ],
)
def test_policy_formula(text, formula):
    p = param(text)
    for it in ITERS:
        rate, _ = learning_rate(p, it, 0)
        assert rate == pytest.approx(formula(it), rel=1e-12), (text, it)


def test_step_sets_current_step():
    p = param("lr_policy: 'step' base_lr: 1 gamma: 0.5 stepsize: 10")
    assert learning_rate(p, 35, 0) == (0.125, 3)


def test_multistep_advances_once_per_call():
    p = param("lr_policy: 'multistep' base_lr: 1 gamma: 0.1 stepvalue: 3 stepvalue: 5")
    step = 0
    rates, steps = [], []
    for it in range(8):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
        steps.append(step)
    assert steps == [0, 0, 0, 1, 1, 2, 2, 2]
    gamma = f32(0.1)
    np.testing.assert_allclose(
        rates, [1, 1, 1, gamma, gamma, gamma**2, gamma**2, gamma**2], rtol=1e-12
    )
    # Caffe's quirk: one boundary per call, even when several were passed
    assert learning_rate(p, 100, 0)[1] == 1
    assert learning_rate(p, 100, 1)[1] == 2
    assert learning_rate(p, 100, 2)[1] == 2


def test_sigmoid_saturates_without_overflow():
    p = param("lr_policy: 'sigmoid' base_lr: 0.01 gamma: 10 stepsize: 100")
    assert learning_rate(p, 0, 0)[0] == 0.0
    assert learning_rate(p, 1000, 0)[0] == pytest.approx(f32(0.01))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lr_policy: 'cosine' base_lr: 0.1",
            r"unknown lr_policy 'cosine'; known policies: fixed, "
            r"step, exp, inv, multistep, poly, sigmoid",
        ),
        ("base_lr: 0.1", "the solver has no lr_policy"),
        ("lr_policy: 'step' base_lr: 0.1 gamma: 0.1", r'"step" needs stepsize > 0'),
        ("lr_policy: 'exp' base_lr: 0.1 gamma: -1", r'"exp" needs gamma >= 0'),
        ("lr_policy: 'sigmoid' base_lr: 0.1 gamma: 0.1", r'"sigmoid" needs stepsize > 0'),
        (
            "lr_policy: 'sigmoid' base_lr: 0.1 gamma: -0.1 stepsize: 5",
            r'"sigmoid" needs gamma >= 0',
        ),
        ("lr_policy: 'multistep' base_lr: 0.1 gamma: -0.1", r'"multistep" needs gamma >= 0'),
        ("lr_policy: 'poly' base_lr: 0.1 power: 1", r'"poly" needs max_iter > 0'),
    ],
)
def test_policy_errors(text, message):
    with pytest.raises(CaffeliteError, match=message):
        learning_rate(param(text), 5, 0)


def test_solver_follows_multistep_schedule(caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(
        SGDSolver,
        "lr_policy: 'multistep' base_lr: 0.2 gamma: 0.5 stepvalue: 2 stepvalue: 3 display: 1",
    )
    x, y = (a.astype(np.float64) for a in sn.problem())
    w, b = (a.astype(np.float64) for a in sn.ip_params(solver))
    for it in range(5):
        residual = x @ w.T + b - y[:, None]
        gw, gb = residual.T @ x / 4, residual.sum(axis=0) / 4
        rate = 0.2 * 0.5 ** (0 if it < 2 else 1 if it < 3 else 2)
        w, b = w - rate * gw, b - rate * gb
        solver.step(1)
        np.testing.assert_allclose(sn.ip_params(solver)[0], w, rtol=1e-5)
    assert solver.current_step == 2
    assert "Iteration 1, lr = 0.2" in caplog.text
    assert "MultiStep Status: Iteration 2, step = 1" in caplog.text
    assert "Iteration 2, lr = 0.1" in caplog.text
    assert "MultiStep Status: Iteration 3, step = 2" in caplog.text
    assert "Iteration 4, lr = 0.05" in caplog.text


def test_poly_past_max_iter_is_a_clear_error():
    param = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="poly", power=0.5, max_iter=100)
    assert learning_rate(param, 100)[0] == 0.0
    with pytest.raises(CaffeliteError, match=r"past max_iter: iteration 101 > max_iter 100"):
        learning_rate(param, 101)
