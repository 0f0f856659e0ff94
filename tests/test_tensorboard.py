"""``caffelite train --tensorboard``: the event files, read back with TensorBoard's own
reader, hold the log's numbers at the log's iterations."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from caffelite.cli import main  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.training_log import parse_lines  # noqa: E402

SOLVER = """
net: "{net}"
test_iter: 2 test_interval: 4 test_initialization: true
base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 3
display: 2 average_loss: 3 max_iter: 8 random_seed: 7
snapshot_after_train: false
"""


def write_solver(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(
        """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: 8 dim: 1 dim: 4 dim: 4 }
    data_filler { type: "gaussian" std: 1 } } }
layer { name: "label" type: "DummyData" top: "label"
  dummy_data_param { shape { dim: 8 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
    )
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net))
    return solver


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def close(a: float, b: float) -> bool:
    """Equal up to the log's rounding to 6 significant digits (at most half a unit of the
    6th digit: 5e-6 relative) and the event file's float32."""
    return math.isclose(a, b, rel_tol=5.1e-6, abs_tol=1e-12)


def test_event_files_hold_the_logs_numbers(tmp_path, capsys):
    logdir = tmp_path / "runs"
    argv = [
        "train",
        "--solver",
        str(write_solver(tmp_path)),
        "--tensorboard",
        str(logdir),
        "--tensorboard_histograms",
        "4",
        "--progress",
        "off",
    ]
    assert main(argv) == 0
    log = parse_lines(capsys.readouterr().err.splitlines())
    scalars = read_scalars(logdir)
    assert set(scalars) == {
        "train/loss",
        "train/smoothed_loss",
        "train/learning_rate",
        "train/iterations_per_second",
        "test/accuracy",
        "test/loss",
    }
    # every iteration for the per-iteration series
    for tag in ("train/loss", "train/smoothed_loss", "train/learning_rate"):
        assert [s for s, _ in scalars[tag]] == list(range(8))
    smoothed = dict(scalars["train/smoothed_loss"])
    rates = dict(scalars["train/learning_rate"])
    speed = dict(scalars["train/iterations_per_second"])
    raw = dict(scalars["train/loss"])
    displayed = [row for row in log.train if row["NumIters"] < 8]  # 8: solve's final pass
    assert [row["NumIters"] for row in displayed] == [0, 2, 4, 6]
    assert sorted(speed) == [0, 2, 4, 6]
    for row in displayed:
        step = row["NumIters"]
        assert close(smoothed[step], row["TrainingLoss"])
        assert close(rates[step], row["LearningRate"])
        assert close(raw[step], row["loss"])  # the train net output printed at display
    assert [rates[i] for i in range(8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2)
    tests = {name: dict(scalars[f"test/{name}"]) for name in ("accuracy", "loss")}
    assert [row["NumIters"] for row in log.test] == [0, 4, 8] == sorted(tests["loss"])
    for row in log.test:
        for name in ("accuracy", "loss"):
            assert close(tests[name][row["NumIters"]], row[name])
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"histograms": 0})
    acc.Reload()
    histograms = acc.Tags()["histograms"]
    assert sorted(histograms) == [
        f"{kind}/ip/{i}" for kind in ("gradients", "params") for i in (0, 1)
    ]
    assert [e.step for e in acc.Histograms("params/ip/0")] == [0, 4]


def test_python_api_on_a_solver(tmp_path):
    from caffelite.solver import get_solver
    from caffelite.tensorboard import TensorBoardLogger

    solver = get_solver(str(write_solver(tmp_path)))
    with TensorBoardLogger(solver, tmp_path / "py") as board:
        solver.step(3)
        assert board in solver.callbacks
    assert board not in solver.callbacks
    scalars = read_scalars(tmp_path / "py")
    assert [s for s, _ in scalars["train/loss"]] == [0, 1, 2]
    assert scalars["test/accuracy"][0][0] == 0


def test_negative_histogram_interval(tmp_path):
    from caffelite.solver import get_solver
    from caffelite.tensorboard import TensorBoardLogger

    solver = get_solver(str(write_solver(tmp_path)))
    with pytest.raises(CaffeliteError, match="histogram_interval"):
        TensorBoardLogger(solver, tmp_path / "x", histogram_interval=-1)
