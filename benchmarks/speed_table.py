"""caffelite against PyTorch (eager) and OpenCV DNN: the table of issue 8, in one command.

    python benchmarks/speed_table.py [--rounds 3] [--threads 1] [--nets caffenet,...]
                                     [--skip-zoo] [--skip-opencv] [--full-run]

Every measurement runs in a fresh process (benchmarks/speed_worker.py); the
implementations alternate, their order reversed each round, so that load on a shared
machine falls on all alike; the table shows medians over all iterations of all rounds.
All get the same thread count (OMP/OpenBLAS/MKL variables, torch.set_num_threads,
cv2.setNumThreads) and caffelite's idle-thread policy (caffelite.kernels.threads). The
zoo nets get seeded random weights, written once to a .caffemodel that every process
loads, and one seeded input; PyTorch's and OpenCV's outputs are checked against
caffelite's before they are timed. PyTorch and OpenCV are
optional: rows whose engine is missing say so. Timings are printed, never asserted.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some hosts for old OpenBLAS builds) slow
current numpy; they are removed from the workers' environment here only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from caffelite.kernels.threads import release_idle_threads  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ZOO = {
    "CaffeNet": "bvlc_reference_caffenet",
    "GoogLeNet": "bvlc_googlenet",
    "VGG-16": "vgg16",
    "ResNet-50": "resnet50",
}


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def opencv_reads_caffe() -> bool:
    """OpenCV 5 dropped its Caffe importer: only 4.x can run these nets."""
    if not available("cv2"):
        return False
    import cv2

    return hasattr(cv2.dnn, "readNetFromCaffe")


def worker(impl: str, case: str, iterations: int, threads: int, weights=None) -> dict:
    env = dict(os.environ)
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    # caffelite's idle-thread policy for every worker, as `import caffelite` sets it, and
    # set here because a worker imports numpy (which loads OpenBLAS) before caffelite.
    # Every engine gets it: PyTorch's ResNet-50 forward + backward took 1,330-1,574 ms
    # with it and 1,449-1,740 ms without, alternating.
    release_idle_threads(env)
    command = [sys.executable, str(HERE / "speed_worker.py"), impl, case, str(iterations)]
    if weights:
        command.append(weights)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{impl} {case} failed:\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def random_weights(directory: Path, net_dir: str) -> str:
    """A .caffemodel of seeded He-scaled weights (BatchNorm: mean 0, variance 1)."""
    from caffelite.layer import TEST
    from caffelite.net import Net

    net = Net(str(REPO / "models" / net_dir / "deploy.prototxt"), TEST)
    rng = np.random.default_rng(0)
    for layer_name, blobs in net.params.items():
        kind = net.layer_dict[layer_name].type
        for i, blob in enumerate(blobs):
            if kind == "BatchNorm":
                blob.data[...] = (0.0, 1.0, 1.0)[i] if i < 3 else 0.0
            elif kind == "Scale" and i == 0:
                blob.data[...] = 1.0 + 0.1 * rng.standard_normal(blob.shape)
            elif i == 0:
                fan_in = int(np.prod(blob.shape[1:]))
                blob.data[...] = rng.standard_normal(blob.shape) * np.sqrt(2.0 / fan_in)
            else:
                blob.data[...] = 0.01 * rng.standard_normal(blob.shape)
    path = directory / f"{net_dir}.caffemodel"
    net.save(str(path))
    return str(path)


def measure(cases: list[tuple[str, str, int, str | None]], rounds: int, threads: int) -> dict:
    """cases: (impl, case, iterations, weights). Alternates impls within each case."""
    results: dict[tuple[str, str], list] = {}
    by_case: dict[str, list] = {}
    for impl, case, iterations, weights in cases:
        by_case.setdefault(case, []).append((impl, iterations, weights))
    for round_index in range(rounds):
        for case, entries in by_case.items():
            order = entries if round_index % 2 == 0 else entries[::-1]
            for impl, iterations, weights in order:
                report = worker(impl, case, iterations, threads, weights)
                print(
                    f"  round {round_index + 1}: {impl:9s} {case}: "
                    + (
                        f"{statistics.median(report['times_ms']):.1f} ms"
                        if "times_ms" in report
                        else f"{report}"
                    ),
                    file=sys.stderr,
                )
                results.setdefault((impl, case), []).append(report)
    return results


def median_ms(results, impl, case):
    reports = results.get((impl, case))
    if not reports:
        return None
    return statistics.median(t for report in reports for t in report["times_ms"])


def row(label, ours, theirs, unit="ms", per_second=None, missing="not installed"):
    def fmt(value):
        if value is None:
            return missing
        return f"{per_second / value * 1000:,.0f}" if per_second else f"{value:,.1f}"

    if ours is None:
        return f"| {label} | {fmt(ours)} | {fmt(theirs)} | |"
    if theirs is None:
        return f"| {label} | {fmt(ours)} | {missing} | |"
    ratio = theirs / ours if per_second else ours / theirs
    return f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f}x |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lenet-iterations", type=int, default=100)
    parser.add_argument("--zoo-iterations", type=int, default=3)
    parser.add_argument("--nets", default=",".join(ZOO), help="comma-separated zoo nets")
    parser.add_argument("--skip-zoo", action="store_true")
    parser.add_argument("--skip-opencv", action="store_true")
    parser.add_argument("--full-run", action="store_true", help="also the 10,000-iteration run")
    args = parser.parse_args(argv)
    has_torch, has_cv = available("torch"), available("cv2") and not args.skip_opencv
    nets = [name for name in args.nets.split(",") if name]

    cases = []
    for case in ("lenet_train", "lenet_test"):
        cases.append(("caffelite", case, args.lenet_iterations, None))
        if has_torch:
            cases.append(("torch", case, args.lenet_iterations, None))
    scratch = tempfile.TemporaryDirectory()
    if not args.skip_zoo:
        for name in nets:
            weights = random_weights(Path(scratch.name), ZOO[name])
            for mode in ("forward", "backward"):
                case = f"{ZOO[name]}:{mode}:8"
                cases.append(("caffelite", case, args.zoo_iterations, weights))
                if has_torch:
                    cases.append(("torch", case, args.zoo_iterations, weights))
            if has_cv:
                for batch in (1, 8):
                    case = f"{ZOO[name]}:forward:{batch}"
                    if batch == 1:
                        cases.append(("caffelite", case, args.zoo_iterations * 3, weights))
                    cases.append(
                        ("opencv", case, args.zoo_iterations * (3 if batch == 1 else 1), weights)
                    )
    results = measure(cases, args.rounds, args.threads)

    print(
        f"\n{args.threads} thread(s); medians over {args.rounds} rounds of fresh, alternating"
        " processes\n"
    )
    print("| | caffelite | PyTorch eager | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(
        row(
            "LeNet train step, batch 64, real MNIST in order (ms)",
            median_ms(results, "caffelite", "lenet_train"),
            median_ms(results, "torch", "lenet_train"),
        )
    )
    print(
        row(
            "LeNet TEST forward, batch 100 (images/s; ratio = caffelite / PyTorch)",
            median_ms(results, "caffelite", "lenet_test"),
            median_ms(results, "torch", "lenet_test"),
            per_second=100,
        )
    )
    for name in [] if args.skip_zoo else nets:
        for mode, label in (("forward", "forward"), ("backward", "forward + backward")):
            case = f"{ZOO[name]}:{mode}:8"
            print(
                row(
                    f"{name}, batch 8, {label} (ms)",
                    median_ms(results, "caffelite", case),
                    median_ms(results, "torch", case),
                )
            )
    if has_cv and not args.skip_zoo:
        print("\n| | caffelite | OpenCV DNN | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for name in nets:
            for batch in (1, 8):
                case = f"{ZOO[name]}:forward:{batch}"
                print(
                    row(
                        f"{name}, batch {batch}, forward (ms)",
                        median_ms(results, "caffelite", case),
                        median_ms(results, "opencv", case),
                    )
                )
    rss = [r["peak_rss_mib"] for r in results.get(("caffelite", "lenet_train"), [])]
    if rss:
        print(f"\npeak RSS of the caffelite LeNet train worker: {max(rss):.1f} MiB")
    if args.full_run:
        print("\n| full lenet_solver run (10,000 iterations, 21 tests) | caffelite | PyTorch |")
        print("| --- | ---: | ---: |")
        from lenet_full_run import run

        os.environ.update({name: str(args.threads) for name in THREAD_VARIABLES})
        full = run("models/lenet/lenet_solver.prototxt")
        accuracy = full["accuracies"][max(full["accuracies"])] if full["accuracies"] else None
        ours = {"wall_s": full["wall_s"], "final_accuracy": accuracy}
        theirs = worker("torch", "lenet_full", 0, args.threads) if has_torch else None
        print(
            f"| wall time (s) | {ours['wall_s']:.0f} | "
            + (f"{theirs['wall_s']:.0f} |" if theirs else "not installed |")
        )
        print(
            f"| final test accuracy | {ours['final_accuracy']} | "
            + (f"{theirs['final_accuracy']} |" if theirs else " |")
        )
        print(f"| peak resident memory (MiB; Caffe's: 121.5) | {full['peak_rss_mib']:.1f} | |")


if __name__ == "__main__":
    main()
