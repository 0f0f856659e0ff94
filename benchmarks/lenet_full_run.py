"""The full LeNet run of lenet_solver.prototxt: wall time, test accuracy, peak memory.

    python benchmarks/lenet_full_run.py [--solver models/lenet/lenet_solver.prototxt]

Runs ``caffelite train`` in a child process from the repository root (the MNIST LMDBs
must exist: ./tools/train_lenet.sh or tools/get_mnist.py + tools/convert_mnist_data.py
make them), reads the test accuracy at each test pass from its log, and reports the
child's peak resident memory: its own high-water mark (VmHWM), printed as it exits.
(wait4's ru_maxrss, what ``/usr/bin/time`` prints, is no good here: a child started from a
large process, such as speed_table.py after it built the zoo nets, inherits the parent's
peak through fork and exec, which gave 2,298 MiB for a 223 MiB run.)
Compare with Caffe 1.0 on this machine: 341 s; 0.9732 / 0.9904 / 0.9907 at 500 / 5000 /
10000 iterations; 121.5 MiB.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACCURACY = re.compile(r"Test net output #\d+: accuracy = ([0-9.]+)")
TESTING = re.compile(r"Iteration (\d+), Testing net")
PEAK = re.compile(r"^peak VmHWM kB: (\d+)$")
#: ``python -m caffelite ARGS`` that prints its own peak resident memory when it exits.
_TRAIN_REPORTING_PEAK = """
import atexit, runpy, sys

def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print(f"peak VmHWM kB: {peak}", flush=True)

atexit.register(report)
runpy.run_module("caffelite", run_name="__main__", alter_sys=True)
"""


def run(solver: str, extra_args=()) -> dict:
    """Train with ``solver`` (plus ``extra_args`` for ``caffelite train``, e.g. ``--gpu 0``)."""
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        if not (REPO / "data/mnist" / name).exists():
            sys.exit(f"data/mnist/{name} is missing: run ./tools/train_lenet.sh once first")
    command = [sys.executable, "-c", _TRAIN_REPORTING_PEAK, "train", "--solver", solver]
    command += ["--progress", "off"]
    command += list(extra_args)
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    accuracies: dict[int, float] = {}
    iteration = peak_kib = None
    last_lines = collections.deque(maxlen=30)
    for line in child.stdout:
        last_lines.append(line)
        if match := TESTING.search(line):
            iteration = int(match.group(1))
        elif (match := ACCURACY.search(line)) and iteration is not None:
            accuracies[iteration] = float(match.group(1))
        elif match := PEAK.match(line):
            peak_kib = int(match.group(1))
    status = child.wait()
    wall = time.perf_counter() - started
    if status != 0:
        sys.exit(f"training failed with status {status}:\n{''.join(last_lines)}")
    if peak_kib is None:
        sys.exit(f"training printed no peak memory line:\n{''.join(last_lines)}")
    return {"wall_s": wall, "accuracies": accuracies, "peak_rss_mib": peak_kib / 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="models/lenet/lenet_solver.prototxt")
    args = parser.parse_args(argv)
    result = run(args.solver)
    acc = result["accuracies"]
    print(f"solver: {args.solver}")
    print("| | caffelite | Caffe 1.0 (measured here) |")
    print("| --- | ---: | ---: |")
    print(f"| wall time, 10,000 iterations + 21 tests | {result['wall_s']:.0f} s | 341 s |")
    for it, caffe in ((500, 0.9732), (5000, 0.9904), (10000, 0.9907)):
        mine = f"{acc[it]:.4f}" if it in acc else "n/a"
        print(f"| test accuracy at {it} | {mine} | {caffe} |")
    print(f"| peak resident memory | {result['peak_rss_mib']:.1f} MiB | 121.5 MiB |")


if __name__ == "__main__":
    main()
