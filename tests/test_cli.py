"""The caffelite command: train (and resume), test, time, and its error messages."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from caffelite.cli import main

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "label"
        dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "score"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt"\n'
        'test_iter: 2\ntest_interval: 10\nbase_lr: 0.1\nlr_policy: "fixed"\n'
        f'display: 5\nmax_iter: 20\nsnapshot: 10\nsnapshot_prefix: "{tmp_path}/tiny"\n'
        "random_seed: 3\n"
    )
    return tmp_path


def test_train_resume_and_test(tiny, capsys):
    assert main(["train", "-solver", str(tiny / "solver.prototxt")]) == 0
    printed = capsys.readouterr().out
    accuracy = re.search(r"Test net #0 at iteration 20: accuracy = ([0-9.]+)", printed)
    assert accuracy and float(accuracy.group(1)) > 0.6  # chance is 1/3; every label is 0
    assert (tiny / "tiny_iter_10.solverstate").exists()
    assert (tiny / "tiny_iter_20.caffemodel").exists()

    assert (
        main(
            [
                "train",
                "--solver",
                str(tiny / "solver.prototxt"),
                "--snapshot",
                str(tiny / "tiny_iter_10.solverstate"),
            ]
        )
        == 0
    )
    assert "at iteration 20" in capsys.readouterr().out

    assert (
        main(
            [
                "test",
                "--model",
                str(tiny / "net.prototxt"),
                "--weights",
                str(tiny / "tiny_iter_20.caffemodel"),
                "--iterations",
                "3",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    scored = [float(line.split(" = ")[1]) for line in lines if line.startswith("accuracy = ")]
    assert len(scored) == 1 and scored[0] > 0.6  # the trained weights, on fresh batches
    assert any(line.startswith("loss = ") and "(* 1 = " in line for line in lines)


def test_time_prints_per_layer_averages(capsys):
    model = str(REPO / "models/lenet/lenet.prototxt")
    assert main(["time", "--model", model, "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("conv1", "pool1", "conv2", "ip1", "prob"):
        assert f"{name}\tforward:" in out
    assert "Average Forward-Backward:" in out


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["train", "--solver", str(tmp_path / "missing.prototxt")]) == 1
    err = capsys.readouterr().err
    assert "caffelite train: error: cannot read" in err and "Traceback" not in err
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "Nope" }\n')
    assert main(["time", "--model", str(bad), "--iterations", "1"]) == 1
    assert "unknown layer type 'Nope'" in capsys.readouterr().err


def test_python_dash_m_entry_point(tiny):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "caffelite",
            "test",
            "--model",
            str(tiny / "net.prototxt"),
            "--weights",
            str(tiny / "missing.caffemodel"),
            "--iterations",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "missing.caffemodel" in result.stderr and "Traceback" not in result.stderr


def test_weights_go_into_test_only_layers_too(tiny, capsys):
    """Caffe's `train --weights` copies into the train net and every test net."""
    from caffelite.layer import TEST
    from caffelite.net import Net
    from caffelite.solver import get_solver

    text = (
        NET
        + """
    layer { name: "probe" type: "InnerProduct" bottom: "x" top: "probe"
            include { phase: TEST } inner_product_param { num_output: 1 } }"""
    )
    (tiny / "net.prototxt").write_text(text)
    trained = Net(str(tiny / "net.prototxt"), TEST)
    trained.params["probe"][0].data[...] = 5.0
    trained.save(tiny / "w.caffemodel")
    solver = get_solver(str(tiny / "solver.prototxt"))
    solver.load_weights(str(tiny / "w.caffemodel"))
    assert np.all(solver.test_nets[0].params["probe"][0].data == 5.0)
    assert (
        main(
            [
                "train",
                "--solver",
                str(tiny / "solver.prototxt"),
                "--weights",
                str(tiny / "w.caffemodel"),
            ]
        )
        == 0
    )


def test_iterations_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["time", "--model", str(REPO / "models/lenet/lenet.prototxt"), "--iterations", "0"])
    assert "must be at least 1" in capsys.readouterr().err
