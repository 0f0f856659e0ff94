"""Soak: resident memory over the full 10,000-iteration LeNet run, every 500 iterations.

    python benchmarks/lenet_soak_rss.py [--solver models/lenet/lenet_solver.prototxt]

Trains in this process (the MNIST LMDBs must exist: ./tools/train_lenet.sh makes
them) and reads the resident set size (/proc/self/statm) at the start of every
500th iteration, i.e. just before its test pass, and at the end. Prints the curve
and the growth after the first test pass (iteration 500 on), which should be
about zero: steady-state training allocates nothing and LMDB pages are unmapped
as the reader goes. Never fails; it reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="models/lenet/lenet_solver.prototxt")
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args(argv)
    os.chdir(REPO)
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        if not (REPO / "data/mnist" / name).exists():
            sys.exit(f"data/mnist/{name} is missing: run ./tools/train_lenet.sh once first")
    from caffelite.solver import get_solver

    solver = get_solver(args.solver)
    curve: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    class Probe:
        def on_start(self):
            if solver.iter % args.every == 0:
                curve.append((solver.iter, rss_mib(), time.perf_counter() - started))
                iteration, rss, elapsed = curve[-1]
                print(
                    f"progress: iteration {iteration}, RSS {rss:.1f} MiB, {elapsed:.0f} s",
                    flush=True,
                )

        def on_gradients_ready(self):
            pass

    solver.add_callback(Probe())
    solver.solve()
    curve.append((solver.iter, rss_mib(), time.perf_counter() - started))
    print(f"solver: {args.solver}; resident memory (MiB) at the start of each iteration shown")
    print("| iteration | RSS MiB | elapsed s |")
    print("| ---: | ---: | ---: |")
    for iteration, rss, elapsed in curve:
        print(f"| {iteration} | {rss:.1f} | {elapsed:.0f} |")
    after_first = [rss for iteration, rss, _ in curve if iteration >= args.every]
    if len(after_first) > 1:
        print(
            f"after the first test pass: min {min(after_first):.1f}, max {max(after_first):.1f}, "
            f"last - first = {after_first[-1] - after_first[0]:+.1f} MiB"
        )


if __name__ == "__main__":
    main()
