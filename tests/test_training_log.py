"""Training log parsing into train/test tables, CSV output, plots and the tool."""

import csv
import importlib.util
import math

import pytest
from conftest import REPO

from caffelite import training_log
from caffelite.errors import CaffeliteError

P = "I1126 05:{m:02d}:{s:09.6f}  1234 solver.py:100] "

LOG_LINES = [
    ("WARNING: Logging before InitGoogleLogging() is written to STDERR", None),
    ("Initializing solver from parameters:", (30, 0.0)),
    ("Solving LeNet", (34, 20.0)),
    ("Iteration 0, Testing net (#0)", (34, 20.5)),
    ("    Test net output #0: accuracy = 0.0965", (34, 21.0)),
    ("    Test net output #1: loss = 2.33 (* 1 = 2.33 loss)", (34, 21.0)),
    ("Iteration 0 (0 iter/s, 0.5s/100 iters), loss = 2.31", (34, 21.5)),
    ("    Train net output #0: loss = 2.31 (* 1 = 2.31 loss)", (34, 21.5)),
    ("Iteration 0, lr = 0.01", (34, 21.6)),
    ("Iteration 100 (9.9 iter/s, 10.1s/100 iters), loss = 0.25", (34, 31.6)),
    ("    Train net output #0: loss = 0.2 (* 1 = 0.2 loss)", (34, 31.6)),
    ("Iteration 100, lr = 0.00992565", (34, 31.7)),
    ("Iteration 200 (10 iter/s, 10s/100 iters), loss = 1.5e-01", (34, 41.6)),
    ("    Train net output #0: loss = nan (* 1 = nan loss)", (34, 41.6)),
    ("Iteration 200, lr = 0.00985258", (34, 41.7)),
    ("Iteration 200, Testing net (#0)", (34, 42.0)),
    ("    Test net output #0: accuracy = 0.9512", (34, 43.0)),
    ("    Test net output #1: loss = 0.158 (* 1 = 0.158 loss)", (34, 43.0)),
    ("Snapshotting to binary proto file lenet_iter_200.caffemodel", (34, 43.5)),
    ("Iteration 300, loss = 0.1", (35, 1.0)),
    ("Iteration 300, Testing net (#0)", (35, 1.0)),
    ("    Test net output #0: accuracy = 0.97", (35, 2.0)),
    ("    Test net output #1: loss = 0.1 (* 1 = 0.1 loss)", (35, 2.0)),
    ("Optimization Done.", (35, 2.5)),
]


def log_text(lines=LOG_LINES) -> str:
    out = []
    for message, stamp in lines:
        prefix = P.format(m=stamp[0], s=stamp[1]) if stamp else ""
        out.append(prefix + message)
    return "\n".join(out) + "\n"


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(log_text())
    return path


def test_parses_train_and_test_rows(log_file):
    train, test = training_log.parse_log(log_file)
    assert [row["NumIters"] for row in train] == [0, 100, 200, 300]
    assert train[0] == {
        "NumIters": 0,
        "Seconds": 1.5,
        "LearningRate": 0.01,
        "TrainingLoss": 2.31,
        "loss": 2.31,
    }
    assert train[1] == pytest.approx(
        {
            "NumIters": 100,
            "Seconds": 11.6,
            "LearningRate": 0.00992565,
            "TrainingLoss": 0.25,
            "loss": 0.2,
        }
    )
    assert train[2]["TrainingLoss"] == 0.15 and math.isnan(train[2]["loss"])
    assert train[2]["LearningRate"] == 0.00985258
    # the final "Iteration N, loss" line has no lr line: the latest earlier rate applies
    assert train[3] == pytest.approx(
        {
            "NumIters": 300,
            "Seconds": 41.0,
            "LearningRate": 0.00985258,
            "TrainingLoss": 0.1,
        }
    )
    assert test == [
        {"NumIters": 0, "Seconds": 0.5, "LearningRate": 0.01, "accuracy": 0.0965, "loss": 2.33},
        {
            "NumIters": 200,
            "Seconds": 22.0,
            "LearningRate": 0.00985258,
            "accuracy": 0.9512,
            "loss": 0.158,
        },
        {
            "NumIters": 300,
            "Seconds": 41.0,
            "LearningRate": 0.00985258,
            "accuracy": 0.97,
            "loss": 0.1,
        },
    ]
    log = training_log.read_log(log_file)
    assert log.train_columns == ["NumIters", "Seconds", "LearningRate", "TrainingLoss", "loss"]
    assert log.test_columns == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]


def test_plain_lines_several_test_nets_and_no_time_stamps():
    lines = [
        "Iteration 0, Testing net (#0)",
        "    Test net output #0: accuracy = 0.5",
        "Iteration 0, Testing net (#1)",
        "    Test net output #0: accuracy = 0.25",
        "    Test net output #1: top5 = 0.75",
        "Iteration 0, loss = 1",
        "    Train net output #0: loss = 1",
        "    Train net output #1: loss = 3",  # a second value of one output
        "Iteration 0, lr = 0.1",
    ]
    log = training_log.parse_lines(lines)
    assert [row["TestNet"] for row in log.test] == [0, 1]
    assert log.test[1]["top5"] == 0.75 and log.test[0]["LearningRate"] == 0.1
    assert log.train[0]["loss"] == 1 and log.train[0]["loss#1"] == 3
    assert math.isnan(log.train[0]["Seconds"])
    assert training_log.parse_lines([]).train == []


def test_year_rollover_keeps_seconds_increasing():
    lines = [
        "I1231 23:59:59.000000  1 solver.py:1] Solving net",
        "I1231 23:59:59.500000  1 solver.py:1] Iteration 0, loss = 1",
        "I0101 00:00:01.000000  1 solver.py:1] Iteration 10, loss = 0.5",
    ]
    rows = training_log.parse_lines(lines).train
    assert [row["Seconds"] for row in rows] == [0.5, 2.0]


def test_csv_files(log_file, tmp_path):
    log = training_log.read_log(log_file)
    train_path, test_path = training_log.save_csv_files(log_file, tmp_path / "out", log)
    assert train_path.endswith("train.log.train") and test_path.endswith("train.log.test")
    with open(train_path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["NumIters", "Seconds", "LearningRate", "TrainingLoss", "loss"]
    assert rows[0]["TrainingLoss"] == "2.31" and rows[2]["loss"] == "nan"
    assert rows[3]["loss"] == ""  # missing values are empty cells
    with open(test_path) as f:
        assert [r["accuracy"] for r in csv.DictReader(f)] == ["0.0965", "0.9512", "0.97"]
    with pytest.raises(CaffeliteError, match="cannot read training log"):
        training_log.read_log(tmp_path / "missing.log")


def test_plots_need_matplotlib_or_say_so(log_file, tmp_path, monkeypatch):
    log = training_log.read_log(log_file)
    if training_log.matplotlib_available():
        out = tmp_path / "summary.png"
        training_log.plot_summary(log, out, title="t")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        chart = tmp_path / "chart.png"
        training_log.plot_chart({"a": log, "b": log}, 0, chart)
        assert chart.read_bytes()[:4] == b"\x89PNG"
        with pytest.raises(CaffeliteError, match="chart type must be 0-7"):
            training_log.plot_chart({"a": log}, 9, chart)
        with pytest.raises(CaffeliteError, match="no log has test accuracy"):
            training_log.plot_chart({"a": training_log.TrainingLog()}, 0, chart)
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(CaffeliteError, match="plotting needs matplotlib"):
        training_log.plot_summary(log, tmp_path / "x.png")


def _tool():
    path = REPO / "tools" / "plot_training_log.py"
    spec = importlib.util.spec_from_file_location("plot_training_log", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_csv_and_accepts_caffes_arguments(log_file, tmp_path, monkeypatch, capsys):
    tool = _tool()
    out_dir = tmp_path / "csv"
    assert tool.main([str(log_file), "--csv", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["train.log.test", "train.log.train"]
    monkeypatch.setattr(training_log, "matplotlib_available", lambda: False)
    assert tool.main([str(log_file)]) == 0  # CSV next to the log; no plot, said clearly
    assert (log_file.parent / "train.log.train").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "none.log")]) == 1
    monkeypatch.undo()
    if training_log.matplotlib_available():
        png = tmp_path / "c.png"
        assert tool.main(["6", str(png), str(log_file)]) == 0  # Caffe's form
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_seconds_use_the_logs_year_across_february(tmp_path):
    lines = [
        "I0228 23:59:00.000000  1234 solver.py:300] Solving LeNet\n",
        "I0301 00:01:00.000000  1234 solver.py:400] Iteration 100 (1 iter/s, 1s/100 iters), "
        "loss = 0.5\n",
    ]
    assert training_log.parse_lines(lines, year=2026).train[0]["Seconds"] == 120.0
    assert training_log.parse_lines(lines, year=2024).train[0]["Seconds"] == 86520.0  # leap


def test_plot_tool_reports_an_unwritable_csv_target_in_one_line(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text("I0101 00:00:00.000000  1 solver.py:1] Solving x\n")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert _tool().main([str(log), "--csv", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("plot_training_log: ") and "Traceback" not in err
