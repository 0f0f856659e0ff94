"""The Solver loop: construction from files and parameters, test nets, display and
test output, callbacks, requested actions, random seeds, Solve's ending."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

import numpy as np
import pytest
import solver_nets as sn

import caffelite.solver as solver_module
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN
from caffelite.solver import Solver, get_solver, solver_type_list
from caffelite.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
)

FLAT = 'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }'


def write_solver(directory, text, net_name="net.prototxt", net_text=None, solver="solver.prototxt"):
    if net_text is not None:
        (directory / net_name).write_text(net_text)
    path = directory / solver
    path.write_text(text)
    return path


def numpy_loss(x, y, w, b):
    x, y, w, b = (a.astype(np.float64) for a in (x, y, w, b))
    r = x @ w.T + b - y[:, None]
    return float(np.sum(r * r) / (2 * x.shape[0]))


# ---- choosing the update rule -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("", SGDSolver),
        ("type: 'SGD'", SGDSolver),
        ("type: 'Nesterov'", NesterovSolver),
        ("type: 'AdaGrad'", AdaGradSolver),
        ("type: 'RMSProp'", RMSPropSolver),
        ("type: 'AdaDelta'", AdaDeltaSolver),
        ("type: 'Adam'", AdamSolver),
        ("solver_type: NESTEROV", NesterovSolver),
        ("solver_type: ADAGRAD", AdaGradSolver),
        ("solver_type: RMSPROP", RMSPropSolver),
        ("solver_type: ADADELTA", AdaDeltaSolver),
        ("solver_type: ADAM", AdamSolver),
    ],
)
def test_type_selects_class(tmp_path, text, cls):
    path = write_solver(
        tmp_path,
        f"net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed' {text}",
        net_text=sn.net_text(),
    )
    solver = get_solver(str(path))
    assert type(solver) is cls
    assert type(Solver(path)) is cls
    assert type(Solver(sn.solver_param(text))) is cls
    assert solver.param.type == cls.type
    assert not solver.param.HasField("solver_type")


def test_type_list_and_unknown_type():
    assert solver_type_list() == ["AdaDelta", "AdaGrad", "Adam", "Nesterov", "RMSProp", "SGD"]
    with pytest.raises(
        CaffeliteError,
        match=r"unknown solver type 'Adamax'; known types: "
        r"AdaDelta, AdaGrad, Adam, Nesterov, RMSProp, SGD",
    ):
        get_solver(sn.solver_param("type: 'Adamax'"))


def test_legacy_and_new_type_together_is_an_error():
    with pytest.raises(CaffeliteError, match="solver_type field .* and the type field"):
        Solver(sn.solver_param("type: 'Adam' solver_type: ADAM"))


def test_class_constructor_runs_its_own_rule(caplog):
    """pycaffe's SGDSolver(path) is SGD whatever the file says (with a warning)."""
    solver = SGDSolver(sn.solver_param("type: 'Adam'"))
    assert type(solver) is SGDSolver
    assert "running SGDSolver as constructed" in caplog.text


def test_malformed_solver_file(tmp_path):
    path = write_solver(tmp_path, "base_lr: 0.1\nmax_iter: oops\n")
    with pytest.raises(CaffeliteError, match=r"solver.prototxt:2:\d+: malformed SolverParameter"):
        Solver(path)


# ---- nets ---------------------------------------------------------------------------
def test_relative_net_path_current_directory_first(tmp_path, monkeypatch):
    solver_dir = tmp_path / "models"
    solver_dir.mkdir()
    path = write_solver(
        solver_dir,
        "net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed'",
        net_text=sn.net_text().replace("LeastSquares", "BesideSolver"),
    )
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Solver(path).net.name == "BesideSolver"
    (elsewhere / "net.prototxt").write_text(sn.net_text().replace("LeastSquares", "InCwd"))
    assert Solver(path).net.name == "InCwd"
    (elsewhere / "net.prototxt").unlink()
    (solver_dir / "net.prototxt").unlink()
    with pytest.raises(
        CaffeliteError,
        match="net file 'net.prototxt' not found in the current "
        "directory nor next to the solver file",
    ):
        Solver(path)


def test_train_net_from_each_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(sn.net_text())
    for field in ("net: 'net.prototxt'", "train_net: 'net.prototxt'"):
        assert Solver(write_solver(tmp_path, f"{field} base_lr: 0.1")).net.phase == TRAIN
    param = sn.solver_param()
    param.train_net_param.CopyFrom(param.net_param)
    param.ClearField("net_param")
    assert Solver(param).net.name == "LeastSquares"


def test_train_net_field_errors():
    param = sn.solver_param()
    param.ClearField("net_param")
    with pytest.raises(
        CaffeliteError,
        match="must specify a train net using one of these "
        "fields: net, net_param, train_net, train_net_param",
    ):
        Solver(param)
    param = sn.solver_param("train_net: 'other.prototxt'")
    with pytest.raises(
        CaffeliteError, match="more than one train net; it gives net_param, train_net"
    ):
        Solver(param)


def test_train_state_and_phase():
    net = sn.net_text(
        extra_layers='layer { name: "extra" type: "Flatten" bottom: "data" '
        'top: "extra" include { stage: "debug" } }'
    )
    plain = Solver(sn.solver_param(net=net))
    assert "extra" not in plain.net.blobs
    staged = Solver(sn.solver_param("train_state { stage: 'debug' phase: TEST }", net=net))
    assert "extra" in staged.net.blobs
    assert staged.net.phase == TRAIN


def test_test_nets_from_generic_net_and_states():
    net = sn.net_text(
        extra_layers='layer { name: "extra" type: "Flatten" bottom: "data" '
        'top: "extra" include { stage: "more" } }'
    )
    solver = sn.make_solver(
        SGDSolver,
        "test_iter: 2 test_iter: 1 test_interval: 5 test_state { } test_state { stage: 'more' }",
        net=net,
    )
    assert len(solver.test_nets) == 2
    assert all(n.phase == TEST for n in solver.test_nets)
    assert "extra" not in solver.test_nets[0].blobs
    assert "extra" in solver.test_nets[1].blobs
    assert len(solver.test_results) == 2


def test_test_net_param_and_generic_nets_together():
    param = sn.solver_param("test_iter: 1 test_iter: 1 test_iter: 1 test_interval: 5")
    param.test_net_param.add().CopyFrom(param.net_param)
    param.test_net_param[0].name = "Specific"
    solver = Solver(param)
    assert [n.name for n in solver.test_nets] == ["Specific", "LeastSquares", "LeastSquares"]


@pytest.mark.parametrize(
    ("text", "specific", "message"),
    [
        (
            "test_interval: 5",
            1,
            r"test_iter must be given for each test net: 1 test net\(s\), "
            r"0 test_iter value\(s\)",
        ),
        (
            "test_iter: 1 test_interval: 5 test_state { } test_state { }",
            0,
            r"test_state must be unspecified or given once per test net: 1 test net\(s\), "
            r"2 test_state\(s\)",
        ),
        ("test_iter: 3", 0, "test_interval must be > 0 when there are test nets"),
        ("average_loss: 0", 0, "average_loss must be at least 1, got 0"),
        ("iter_size: 0", 0, "iter_size must be at least 1, got 0"),
    ],
)
def test_test_net_errors(text, specific, message):
    param = sn.solver_param(text)
    if specific:
        param.train_net_param.CopyFrom(param.net_param)
        param.ClearField("net_param")
        param.test_net_param.add().CopyFrom(param.train_net_param)
    with pytest.raises(CaffeliteError, match=message):
        Solver(param)


def test_test_nets_share_train_weights():
    solver = sn.make_solver(SGDSolver, "test_iter: 1 test_interval: 100 momentum: 0.9")
    solver.step(3)
    train_w, train_b = solver.net.params["ip"]
    test_w, test_b = solver.test_nets[0].params["ip"]
    np.testing.assert_array_equal(test_w.data, train_w.data)
    train_w.data[0, 0] += 1.0  # shared memory, not a copy
    assert test_w.data[0, 0] == train_w.data[0, 0]


# ---- random seeds -------------------------------------------------------------------
def dropout_net():
    return (
        sn.net_text(extra_layers="")
        .replace('bottom: "data" top: "ip"', 'bottom: "dropped" top: "ip"')
        .replace(
            'layer { name: "ip"',
            'layer { name: "drop" type: "Dropout" bottom: "data" top: "dropped" '
            'dropout_param { dropout_ratio: 0.5 } }\n    layer { name: "ip"',
            1,
        )
    )


def test_random_seed_makes_runs_identical():
    runs = []
    for seed in (1701, 1701, 42):
        solver = sn.make_solver(SGDSolver, f"random_seed: {seed} momentum: 0.9", net=dropout_net())
        assert "dropped" in solver.net.blobs
        solver.step(10)
        runs.append(sn.ip_params(solver))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


# ---- the loop's output ------------------------------------------------------------------
def test_display_lines(caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(SGDSolver, "display: 2 max_iter: 4", net=sn.net_text(extra_layers=FLAT))
    x, y = sn.problem()
    w0, b0 = sn.ip_params(solver)
    solver.solve()
    lines = [r.getMessage() for r in caplog.records]
    first = next(i for i, line in enumerate(lines) if line.startswith("Iteration 0 ("))
    assert re.fullmatch(
        r"Iteration 0 \([0-9.e+-]+ iter/s, [0-9.e+-]+s/2 iters\), loss = (\S+)", lines[first]
    )
    loss0 = float(lines[first].rsplit("= ", 1)[1])
    assert loss0 == pytest.approx(numpy_loss(x, y, w0, b0), rel=1e-5)
    # outputs in name order, as Caffe's std::set gives them: "flat" before "loss"
    value = f"{np.float32(loss0):.6g}"
    assert lines[first + 1 : first + 13] == [
        f"    Train net output #{k}: flat = {v:.6g}" for k, v in enumerate(x.ravel())
    ]
    assert lines[first + 13] == f"    Train net output #12: loss = {value} (* 1 = {value} loss)"
    assert lines[first + 14] == "Iteration 0, lr = 0.1"
    assert any(line.startswith("Iteration 2 (") for line in lines)
    assert "Iteration 2, lr = 0.1" in lines
    assert not any(line.startswith(("Iteration 1 ", "Iteration 3 ")) for line in lines)
    final = [line for line in lines if line.startswith("Iteration 4, loss = ")]
    assert len(final) == 1
    w, b = sn.ip_params(solver)
    assert float(final[0].split("= ")[1]) == pytest.approx(numpy_loss(x, y, w, b), rel=1e-5)
    assert lines[-1] == "Optimization Done."
    assert "Solving LeastSquares" in lines
    assert "Learning Rate Policy: fixed" in lines


def test_average_loss_smooths_display(caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(SGDSolver, "display: 1 average_loss: 3")
    losses = []
    solver.add_callback(None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.step(6)
    shown = [
        float(r.getMessage().rsplit("= ", 1)[1])
        for r in caplog.records
        if re.match(r"Iteration \d+ \(", r.getMessage())
    ]
    expected = [np.mean(losses[max(0, k - 2) : k + 1]) for k in range(6)]
    np.testing.assert_allclose(shown, expected, rtol=1e-5)
    assert solver.smoothed_loss == pytest.approx(expected[-1], rel=1e-6)


def test_test_returns_means_and_logs(caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(
        SGDSolver,
        "test_iter: 2 test_interval: 100 test_compute_loss: true",
        net=sn.net_text(batch_size=2, extra_layers=FLAT),
    )
    x, y = sn.problem()
    w, b = sn.ip_params(solver)
    results = solver.test()
    assert isinstance(results, OrderedDict)
    assert list(results) == ["flat", "loss"]
    halves = [numpy_loss(x[:2], y[:2], w, b), numpy_loss(x[2:], y[2:], w, b)]
    assert isinstance(results["loss"], float)
    assert results["loss"] == pytest.approx(np.mean(halves), rel=1e-5)
    np.testing.assert_allclose(results["flat"], (x[:2] + x[2:]) / 2, rtol=1e-6)
    assert results["flat"].shape == (2, 3)
    assert solver.test_results[0] is results
    assert solver.test_losses[0] == pytest.approx(np.mean(halves), rel=1e-5)
    lines = [r.getMessage() for r in caplog.records]
    assert "Iteration 0, Testing net (#0)" in lines
    shown = [float(line.split(": ")[1]) for line in lines if line.startswith("Test loss: ")]
    assert shown == [pytest.approx(np.mean(halves), rel=1e-5)]
    mean = results["loss"]
    assert f"    Test net output #6: loss = {mean:.6g} (* 1 = {mean:.6g} loss)" in lines
    assert f"    Test net output #0: flat = {results['flat'][0, 0]:.6g}" in lines
    assert f"    Test net output #5: flat = {results['flat'][1, 2]:.6g}" in lines
    with pytest.raises(CaffeliteError, match=r"test net #3 does not exist; the solver has 1"):
        solver.test(3)


def test_zero_test_iter_gives_empty_results():
    solver = sn.make_solver(SGDSolver, "test_iter: 0 test_interval: 1 test_compute_loss: true")
    assert solver.test() == OrderedDict()
    assert solver.test_losses[0] is None


def test_testing_schedule(caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(SGDSolver, "test_iter: 1 test_interval: 2 max_iter: 4")
    solver.solve()
    tested = [r.getMessage() for r in caplog.records if "Testing net" in r.getMessage()]
    # at 0 (test_initialization), 2, and once more at the end of solve
    assert tested == [
        "Iteration 0, Testing net (#0)",
        "Iteration 2, Testing net (#0)",
        "Iteration 4, Testing net (#0)",
    ]
    caplog.clear()
    solver = sn.make_solver(SGDSolver, "test_iter: 1 test_interval: 2 test_initialization: false")
    solver.step(3)
    tested = [r.getMessage() for r in caplog.records if "Testing net" in r.getMessage()]
    assert tested == ["Iteration 2, Testing net (#0)"]
    assert list(solver.test_results[0]) == ["loss"]


def test_callbacks_run_in_order():
    solver = sn.make_solver(SGDSolver)
    events = []

    class Recorder:
        def on_start(self):
            events.append(("start", solver.iter))

        def on_gradients_ready(self):
            diff = solver.net.params["ip"][0].diff
            events.append(("gradients", solver.iter, bool(np.any(diff != 0))))

    solver.add_callback(Recorder())
    solver.add_callback(lambda: events.append(("fn-start", solver.iter)), None)
    solver.step(2)
    assert events == [
        ("start", 0),
        ("fn-start", 0),
        ("gradients", 0, True),
        ("start", 1),
        ("fn-start", 1),
        ("gradients", 1, True),
    ]


# ---- requested actions and solve's ending ---------------------------------------------
def actions(*sequence):
    """An action function returning ``sequence`` one per call, then "none"."""
    queue = list(sequence)
    return lambda: queue.pop(0) if queue else "none"


def test_requested_snapshot_continues(tmp_path):
    solver = sn.make_solver(SGDSolver, f"snapshot_prefix: '{tmp_path}/lsq'")
    solver.set_action_function(actions("none", "snapshot"))
    solver.step(4)
    assert solver.iter == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lsq_iter_2.caffemodel",
        "lsq_iter_2.solverstate",
    ]


def test_requested_stop_snapshots_and_stops(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(
        SGDSolver, f"snapshot_prefix: '{tmp_path}/lsq' max_iter: 10 snapshot_after_train: true"
    )
    solver.set_action_function(actions("none", "none", "stop"))
    solver.solve()
    assert solver.iter == 3
    assert solver.requested_early_exit
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lsq_iter_3.caffemodel",
        "lsq_iter_3.solverstate",
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Snapshotting to binary proto file") for m in messages) == 1
    assert messages[-1] == "Optimization stopped early."
    # a later step() starts afresh
    solver.set_action_function(None)
    solver.step(2)
    assert solver.iter == 5 and not solver.requested_early_exit


def test_stop_while_testing(tmp_path):
    solver = sn.make_solver(
        SGDSolver, f"snapshot_prefix: '{tmp_path}/lsq' test_iter: 3 test_interval: 2"
    )
    solver.set_action_function(actions("none", "none", "none", "none", "none", "stop"))
    # the iteration-0 test asks once per batch (3 calls), iterations 0 and 1 once each
    # after their update; the stop arrives in the first batch of the test at iteration 2
    solver.step(10)
    assert solver.iter == 2
    assert list(solver.test_results[0]) == ["loss"]  # kept from the test at iteration 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lsq_iter_2.caffemodel",
        "lsq_iter_2.solverstate",
    ]


def test_unknown_action_is_an_error():
    solver = sn.make_solver(SGDSolver)
    solver.set_action_function(lambda: "explode")
    with pytest.raises(CaffeliteError, match="unknown signal action 'explode'"):
        solver.step(1)


def test_solve_snapshots_after_train_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    solver = sn.make_solver(
        SGDSolver,
        f"snapshot_prefix: '{tmp_path}/lsq' max_iter: 5 snapshot: 2 snapshot_after_train: true",
    )
    solver.solve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"lsq_iter_{n}.{ext}" for n in (2, 4, 5) for ext in ("caffemodel", "solverstate")
    ]
    solver = sn.make_solver(
        SGDSolver,
        f"snapshot_prefix: '{tmp_path}/b' max_iter: 4 snapshot: 2 snapshot_after_train: true",
    )
    solver.solve()
    assert sorted(p.name for p in tmp_path.glob("b_*")) == [
        f"b_iter_{n}.{ext}" for n in (2, 4) for ext in ("caffemodel", "solverstate")
    ]


def test_snapshot_needs_a_prefix_and_a_writable_place(tmp_path):
    with pytest.raises(CaffeliteError, match="snapshot is set but snapshot_prefix is not"):
        Solver(sn.solver_param("snapshot: 10"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CaffeliteError, match="cannot write to snapshot prefix"):
        Solver(sn.solver_param(f"snapshot: 10 snapshot_prefix: '{blocker}/sub/lsq'"))


def test_module_exports():
    assert solver_module.Solver is Solver
    assert issubclass(AdamSolver, SGDSolver) and issubclass(SGDSolver, Solver)


def test_solver_mode_gpu_on_nets_built_in_cpu_mode_runs_on_the_cpu_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="caffelite"):
        solver = sn.make_solver(SGDSolver, "solver_mode: GPU")
    solver.step(1)
    assert "they were built in CPU mode" in caplog.text
    assert solver.net.device is None


def test_set_mode_gpu_without_cupy_says_how_to_get_it():
    import importlib.util

    import caffelite

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(CaffeliteError, match=r"GPU mode needs CuPy.*\.\[gpu\]"):
        caffelite.set_mode_gpu()


@pytest.mark.parametrize("cls", [SGDSolver, AdamSolver])
def test_lr_is_the_policy_rate_at_the_current_iteration(cls):
    """pycaffe's SGDSolver.lr (every solver derives from SGDSolver): Caffe's 'inv'
    policy base_lr * (1 + gamma * iter) ^ -power, read before and after steps."""
    solver = sn.make_solver(cls, "lr_policy: 'inv' base_lr: 0.01 gamma: 0.1 power: 0.75")
    assert solver.lr == pytest.approx(0.01)
    solver.step(3)
    assert solver.iter == 3
    assert solver.lr == pytest.approx(0.01 * (1 + 0.1 * 3) ** -0.75)
