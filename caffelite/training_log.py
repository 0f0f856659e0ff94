"""Parse Caffe-format training logs into tables and plot them (Caffe's tools/extra).

The solver's log lines, after an optional glog prefix
(``I1126 05:34:21.123456  1234 solver.py:218] ``), that are read:

* ``Iteration N (x iter/s, ys/100 iters), loss = L`` (or ``Iteration N, loss = L``):
  a training row for iteration N, ``TrainingLoss`` = L (the smoothed loss);
* ``    Train net output #k: name = v (* w = l loss)``: column ``name`` = v of that row;
* ``Iteration N, lr = R``: ``LearningRate`` of training row N;
* ``Iteration N, Testing net (#t)``: a test row for iteration N (and test net t);
* ``    Test net output #k: name = v``: column ``name`` = v of that row.

Every row has ``NumIters``, ``Seconds`` (from the glog time stamps, counted from the
"Solving" line, else from the first stamped line) and ``LearningRate``; a test row
takes the rate of its iteration (or the nearest earlier one), as training uses it.
Test rows carry ``TestNet`` when the log has more than one test net.
"""

from __future__ import annotations

import bisect
import csv
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from caffelite.errors import CaffeliteError

_GLOG = re.compile(r"^[IWEFD](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)\s+\d+\s+\S+\] ")
_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf|-nan))"
_ITER_LOSS = re.compile(rf"Iteration (\d+)(?: \([^)]*\))?, loss = {_NUMBER}")
_LR = re.compile(rf"Iteration (\d+), lr = {_NUMBER}")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(rf"(Train|Test) net output #(\d+): (\S+) = {_NUMBER}")
_ITERATION = re.compile(r"Iteration (\d+)")

TRAIN_BASE = ("NumIters", "Seconds", "LearningRate", "TrainingLoss")
TEST_BASE = ("NumIters", "Seconds", "LearningRate")


@dataclass
class TrainingLog:
    """The parsed log: one dict per training display and per test, in log order."""

    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)

    @property
    def train_columns(self) -> list[str]:
        return _columns(self.train, TRAIN_BASE)

    @property
    def test_columns(self) -> list[str]:
        return _columns(self.test, TEST_BASE)


def _columns(rows: list[dict], base) -> list[str]:
    names = [name for name in base if any(name in row for row in rows)] if rows else []
    for row in rows:
        names.extend(name for name in row if name not in names)
    return names


def _stamp(match, year: int) -> datetime:
    """The glog time stamp as a datetime in ``year`` (glog omits the year; Caffe's
    parse_log takes the log file's). Feb 29 in a non-leap year falls back to 2000."""
    month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 6))
    micros = int(match.group(6)[:6].ljust(6, "0"))
    try:
        return datetime(year, month, day, hour, minute, second, micros)
    except ValueError:
        return datetime(2000, month, day, hour, minute, second, micros)


def _next_year(stamp: datetime) -> datetime:
    try:
        return stamp.replace(year=stamp.year + 1)
    except ValueError:  # Feb 29 taken in the wrong year
        return stamp + timedelta(days=365)


def _number(text: str) -> float:
    return float("nan") if text.lstrip("+-") == "nan" else float(text)


def _new_row(stamps: list, stamp, row: dict) -> dict:
    """A new table row, remembered with the time stamp of the line that starts it."""
    if stamp is not None:
        stamps.append((row, stamp))
    return row


def parse_lines(lines, year: int | None = None) -> TrainingLog:
    """Parse log lines (an iterable of str) into a TrainingLog; ``year`` is the year the
    log starts in (default: this year), which matters for logs that cross February."""
    year = datetime.now().year if year is None else year
    train: dict[int, dict] = {}
    test: list[dict] = []
    rates: dict[int, float] = {}
    stamps: list[tuple[dict, datetime]] = []
    start = first = None
    iteration = None
    train_row = test_row = None

    for line in lines:
        match = _GLOG.match(line)
        stamp = _stamp(match, year) if match else None
        message = line[match.end() :] if match else line.strip()
        if stamp is not None:
            first = first or stamp
            if start is None and message.startswith("Solving"):
                start = stamp

        if m := _ITER_LOSS.search(message):
            iteration = int(m.group(1))
            train_row = train.get(iteration) or _new_row(stamps, stamp, {"NumIters": iteration})
            train[iteration] = train_row
            train_row["TrainingLoss"] = _number(m.group(2))
            test_row = None
        elif m := _LR.search(message):
            iteration = int(m.group(1))
            rates[iteration] = _number(m.group(2))
            train_row = train.get(iteration) or _new_row(stamps, stamp, {"NumIters": iteration})
            train[iteration] = train_row
            train_row["LearningRate"] = rates[iteration]
        elif m := _TESTING.search(message):
            iteration = int(m.group(1))
            test_row = _new_row(stamps, stamp, {"NumIters": iteration, "TestNet": int(m.group(2))})
            test.append(test_row)
        elif m := _OUTPUT.search(message):
            kind, index, name, value = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            if kind == "Train":
                if train_row is None:
                    if iteration is None:
                        continue
                    train_row = _new_row(stamps, stamp, {"NumIters": iteration})
                    train[iteration] = train_row
                row = train_row
            else:
                if test_row is None:
                    if iteration is None:
                        continue
                    test_row = _new_row(stamps, stamp, {"NumIters": iteration, "TestNet": 0})
                    test.append(test_row)
                row = test_row
            key = name if name not in row else f"{name}#{index}"
            row[key] = _number(value)
        elif m := _ITERATION.search(message):
            iteration = int(m.group(1))

    origin = start or first
    for row, stamp in stamps:
        if stamp < origin:  # the log ran into a new year
            stamp = _next_year(stamp)
        row["Seconds"] = (stamp - origin).total_seconds()
    train_rows = sorted(train.values(), key=lambda row: row["NumIters"])
    _fill_rates(train_rows, rates)
    _fill_rates(test, rates)
    several_nets = len({row["TestNet"] for row in test}) > 1
    for row in train_rows + test:
        row.setdefault("Seconds", float("nan"))
    for row in test:
        net = row.pop("TestNet")
        if several_nets:
            row["TestNet"] = net
    return TrainingLog(
        [_ordered(r, TRAIN_BASE) for r in train_rows], [_ordered(r, TEST_BASE) for r in test]
    )


def _fill_rates(rows: list[dict], rates: dict[int, float]) -> None:
    """A row's rate: its iteration's, else the latest before it, else the first after."""
    known = sorted(rates)
    for row in rows:
        if "LearningRate" in row:
            continue
        if not known:
            row["LearningRate"] = float("nan")
            continue
        position = bisect.bisect_right(known, row["NumIters"])
        row["LearningRate"] = rates[known[position - 1] if position else known[0]]


def _ordered(row: dict, base) -> dict:
    ordered = {name: row[name] for name in base if name in row}
    ordered.update((name, value) for name, value in row.items() if name not in ordered)
    return ordered


def parse_log(path) -> tuple[list[dict], list[dict]]:
    """``(train_rows, test_rows)`` of the log file at ``path`` (Caffe's parse_log)."""
    log = read_log(path)
    return log.train, log.test


def read_log(path) -> TrainingLog:
    try:
        year = datetime.fromtimestamp(os.path.getmtime(path)).year
        with open(path, errors="replace") as handle:
            return parse_lines(handle, year)
    except OSError as exc:
        raise CaffeliteError(f"cannot read training log {path}: {exc.strerror}") from None


# ---- CSV ----------------------------------------------------------------------------------


def write_csv(rows: list[dict], path, delimiter: str = ",", columns=None) -> None:
    """Write ``rows`` as CSV with a header; a missing value is an empty cell."""
    columns = list(columns) if columns is not None else _columns(rows, TRAIN_BASE + TEST_BASE)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter=delimiter, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(v) for k, v in row.items()})


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def save_csv_files(log_path, output_dir, log: TrainingLog, delimiter: str = ","):
    """Write ``<log name>.train`` and ``<log name>.test`` in ``output_dir`` (Caffe's names);
    returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.basename(os.fspath(log_path))
    train_path = os.path.join(output_dir, stem + ".train")
    test_path = os.path.join(output_dir, stem + ".test")
    write_csv(log.train, train_path, delimiter, log.train_columns)
    write_csv(log.test, test_path, delimiter, log.test_columns)
    return train_path, test_path


# ---- plots --------------------------------------------------------------------------------

#: Caffe's plot_training_log.py chart types: (table, quantity, x axis).
CHART_TYPES = {
    0: ("test", "accuracy", "NumIters"),
    1: ("test", "accuracy", "Seconds"),
    2: ("test", "loss", "NumIters"),
    3: ("test", "loss", "Seconds"),
    4: ("train", "LearningRate", "NumIters"),
    5: ("train", "LearningRate", "Seconds"),
    6: ("train", "loss", "NumIters"),
    7: ("train", "loss", "Seconds"),
}


def matplotlib_available() -> bool:
    """Whether plots can be drawn (matplotlib is installed)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CaffeliteError(
            "plotting needs matplotlib (pip install matplotlib); the CSV tables work without it"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _quantity_column(rows: list[dict], quantity: str, table: str) -> str | None:
    """The column holding ``quantity``: the column itself, else the first whose name
    mentions it (the smoothed TrainingLoss first for training loss)."""
    columns = _columns(rows, TRAIN_BASE if table == "train" else TEST_BASE)
    if quantity in columns:
        return quantity
    if table == "train" and quantity == "loss" and "TrainingLoss" in columns:
        return "TrainingLoss"
    hits = [c for c in columns if quantity in c.lower() and c not in TRAIN_BASE]
    return hits[0] if hits else None


def _series(rows: list[dict], column: str, x: str):
    points = [(r[x], r[column]) for r in rows if column in r and not math.isnan(r.get(x, 0.0))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_chart(logs: dict, chart_type: int, path) -> None:
    """One of Caffe's numbered charts for several logs (``{label: TrainingLog}``)."""
    if chart_type not in CHART_TYPES:
        raise CaffeliteError(
            f"chart type must be 0-7, got {chart_type}: "
            + "; ".join(f"{k}: {t} {q} vs {x}" for k, (t, q, x) in CHART_TYPES.items())
        )
    table, quantity, x = CHART_TYPES[chart_type]
    plt = _pyplot()
    figure, axes = plt.subplots()
    plotted = 0
    for label, log in logs.items():
        rows = getattr(log, table)
        column = _quantity_column(rows, quantity, table)
        if column is None:
            continue
        xs, ys = _series(rows, column, x)
        axes.plot(xs, ys, marker=".", label=label)
        plotted += 1
    if not plotted:
        plt.close(figure)
        raise CaffeliteError(f"no log has {table} {quantity} values to plot")
    axes.set_xlabel(x)
    axes.set_ylabel(f"{table} {quantity}")
    axes.set_title(f"{table.capitalize()} {quantity} vs. {x}")
    axes.legend()
    axes.grid(True, alpha=0.3)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_summary(log: TrainingLog, path, title: str = "") -> None:
    """Loss curves (training and test) and accuracy curves against iterations."""
    plt = _pyplot()
    accuracy = [
        (table, c)
        for table, rows in (("test", log.test), ("train", log.train))
        for c in _columns(rows, TRAIN_BASE if table == "train" else TEST_BASE)
        if "acc" in c.lower()
    ]
    figure, panels = plt.subplots(1, 2 if accuracy else 1, figsize=(12 if accuracy else 7, 4.5))
    loss_axes = panels[0] if accuracy else panels
    for table, rows in (("train", log.train), ("test", log.test)):
        base = TRAIN_BASE if table == "train" else TEST_BASE
        for column in _columns(rows, base):
            if column == "TrainingLoss" or ("loss" in column.lower() and column not in base):
                xs, ys = _series(rows, column, "NumIters")
                loss_axes.plot(xs, ys, label=f"{table} {column}")
    loss_axes.set_xlabel("iterations")
    loss_axes.set_ylabel("loss")
    loss_axes.grid(True, alpha=0.3)
    if loss_axes.lines:
        loss_axes.legend()
    if accuracy:
        for table, column in accuracy:
            xs, ys = _series(getattr(log, table), column, "NumIters")
            panels[1].plot(xs, ys, marker=".", label=f"{table} {column}")
        panels[1].set_xlabel("iterations")
        panels[1].set_ylabel("accuracy")
        panels[1].grid(True, alpha=0.3)
        panels[1].legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
