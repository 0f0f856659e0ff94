"""caffelite against PyTorch on LeNet: train ms/iter, test images/s, peak RSS, layer times.

    python benchmarks/lenet_speed.py [--rounds 5] [--iterations 100] [--threads 2]

Each measurement runs in a fresh process; the two implementations alternate round by
round so that machine load affects both alike, and the table shows medians over all
iterations of all rounds. PyTorch is optional: without it its rows say so. The thread
count is applied to both (OMP/OpenBLAS variables for numpy, set_num_threads for torch).
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_worker(impl: str, mode: str, iterations: int, threads: int) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    command = [
        sys.executable,
        str(HERE / "lenet_worker.py"),
        impl,
        mode,
        str(iterations),
        str(threads),
    ]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def measure(rounds: int, iterations: int, threads: int) -> dict:
    impls = ["caffelite"] + (["torch"] if _has_torch() else [])
    results = {
        (impl, mode): {"times": [], "rss": []} for impl in impls for mode in ("train", "test")
    }
    for round_index in range(rounds):
        for mode in ("train", "test"):
            order = impls if round_index % 2 == 0 else impls[::-1]
            for impl in order:
                report = run_worker(impl, mode, iterations, threads)
                results[(impl, mode)]["times"] += report["times_ms"]
                results[(impl, mode)]["rss"].append(report["peak_rss_mib"])
    return results


def table(results: dict) -> list[str]:
    def median(impl, mode):
        entry = results.get((impl, mode))
        return statistics.median(entry["times"]) if entry else None

    rows = ["| | caffelite | PyTorch | ratio |", "| --- | ---: | ---: | ---: |"]
    c_train, t_train = median("caffelite", "train"), median("torch", "train")
    c_test, t_test = median("caffelite", "test"), median("torch", "test")
    torch_missing = "not installed"
    rows.append(
        f"| train step, batch 64 (ms, median) | {c_train:.2f} | "
        + (f"{t_train:.2f} | {c_train / t_train:.2f}x |" if t_train else f"{torch_missing} | |")
    )
    rows.append(
        f"| test forward, batch 100 (images/s) | {100_000 / c_test:.0f} | "
        + (
            f"{100_000 / t_test:.0f} | {t_test / c_test:.2f}x |"
            if t_test
            else f"{torch_missing} | |"
        )
    )
    c_rss = max(results[("caffelite", "train")]["rss"])
    t_rss = max(results[("torch", "train")]["rss"]) if ("torch", "train") in results else None
    rows.append(
        f"| peak RSS of the train worker (MiB) | {c_rss:.1f} | "
        + (f"{t_rss:.1f} | |" if t_rss else f"{torch_missing} | |")
    )
    return rows


def layer_times(iterations: int, threads: int) -> list[str]:
    return run_worker("caffelite", "layers", iterations, threads)["lines"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not _has_torch():
        print("PyTorch is not installed: its columns are skipped (pip install torch).")
    results = measure(args.rounds, args.iterations, args.threads)
    print(
        f"LeNet, {args.threads} threads, {args.rounds} alternating rounds x "
        f"{args.iterations} iterations\n"
    )
    print("\n".join(table(results)))
    print("\ncaffelite time (LeNet train net, batch 64, data excluded):")
    print("\n".join(layer_times(max(args.iterations // 2, 10), args.threads)))


if __name__ == "__main__":
    main()
