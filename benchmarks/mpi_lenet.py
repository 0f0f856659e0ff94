"""Data-parallel LeNet on this machine, and the cost model it calibrates.

    python benchmarks/mpi_lenet.py [--rounds 3] [--iterations 40]

Measures LeNet training on real MNIST (an LMDB of the first 12,800 training images,
Data layer included) at a global batch of 128, in fresh processes that alternate
round by round: one process with 2 threads (batch 128), and ``mpiexec -n 2`` with one
thread each (batch 64 per rank, gradients all-reduced). Reports images/s, the time a
rank waits for the all-reduce after backward (what overlap did not hide), and a
blocking all-reduce of all of LeNet's gradient buckets, alone. Then prints the cost
model for N = 2..64 hosts (see the README), calibrated on the measured compute rate.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_MNIST = Path(os.environ.get("CAFFELITE_MNIST_DIR", REPO.parent / "shared/data/mnist"))
GLOBAL_BATCH, RECORDS, WARMUP = 128, 12800, 5

# Per model: parameters (float32), forward multiply-adds per image, batch per rank.
MODELS = {
    "LeNet": (431_080, 2.29e6, 64),
    "CaffeNet": (60_965_224, 7.24e8, 256),
    "ResNet-50": (25_557_032, 4.1e9, 32),
}
LINKS_GBPS = (10, 25, 100)
HOSTS = (2, 4, 8, 16, 32, 64)
LATENCY_S = 10e-6  # per message step on an Ethernet cluster: an assumption, not measured here


def worker(workdir: Path, iterations: int) -> None:
    """One measurement (alone, or one rank under mpiexec); rank 0 prints one JSON line."""
    from caffelite import parallel
    from caffelite.parallel import mpi
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import read_text
    from caffelite.solver import get_solver

    comm = mpi.join_world() if mpi.launched_by_mpi() else None
    ranks = parallel.solver_count()
    param = read_text(REPO / "models/lenet/lenet_solver.prototxt", caffe_pb2.SolverParameter())
    net = (REPO / "models/lenet/lenet_train_test.prototxt").read_text()
    net = net.replace("batch_size: 64", f"batch_size: {GLOBAL_BATCH // ranks}")
    (workdir / f"net{ranks}.prototxt").write_text(net)
    param.net = str(workdir / f"net{ranks}.prototxt")
    del param.test_iter[:]
    param.test_interval, param.display, param.snapshot = 0, 0, 0
    param.snapshot_after_train = False
    param.random_seed = 1701
    os.chdir(workdir)
    solver = get_solver(param)
    reducer = mpi.MPIGradientReducer(solver, comm) if ranks > 1 else None
    solver.step(WARMUP)
    if comm is not None:
        comm.Barrier()
    waited = reducer.wait_seconds if reducer else 0.0
    started = time.perf_counter()
    solver.step(iterations)
    if comm is not None:
        comm.Barrier()
    elapsed = time.perf_counter() - started
    result = {
        "ranks": ranks,
        "images_per_s": GLOBAL_BATCH * iterations / elapsed,
        "ms_per_iter": 1000 * elapsed / iterations,
    }
    if reducer is not None:
        result["wait_ms_per_iter"] = 1000 * (reducer.wait_seconds - waited) / iterations
        MPI = mpi.require_mpi()
        times = []
        for _ in range(30):
            comm.Barrier()
            t0 = time.perf_counter()
            for bucket in reducer.buckets:
                comm.Allreduce(MPI.IN_PLACE, bucket.buffer, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        result["allreduce_ms"] = 1000 * statistics.median(times)
        result["gradient_bytes"] = sum(b.nbytes for b in reducer.buckets)
    if parallel.root_solver():
        print(json.dumps(result), flush=True)


def measure(workdir: Path, ranks: int, iterations: int) -> dict:
    threads = "2" if ranks == 1 else "1"
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    command = [sys.executable, __file__, "--worker", str(workdir), "--iterations", str(iterations)]
    if ranks > 1:
        command = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(ranks), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ring_allreduce_s(nbytes: float, hosts: int, gbps: float) -> float:
    """Ring all-reduce: 2 (N-1) steps, each sending 1/N of the bytes."""
    steps = 2 * (hosts - 1)
    return steps * (nbytes / hosts / (gbps * 1e9 / 8) + LATENCY_S)


def cost_model(flops_per_s: float) -> None:
    """Scaling efficiency compute / (compute + exposed all-reduce), without overlap, and
    with the all-reduce fully hidden behind backward (two thirds of the compute)."""
    print(f"\ncost model: compute at {flops_per_s / 1e9:.2f} GFLOP/s per host (measured, 1 thread)")
    print("model      params MB  batch  compute s | hosts: efficiency no overlap / overlap")
    for name, (params, macs, batch) in MODELS.items():
        compute = 3 * 2 * macs * batch / flops_per_s  # forward + backward ~ 3 forwards
        nbytes = 4 * params
        print(f"{name:<10} {nbytes / 1e6:9.1f}  {batch:5d}  {compute:9.3f}")
        for gbps in LINKS_GBPS:
            cells = []
            for hosts in HOSTS:
                comm = ring_allreduce_s(nbytes, hosts, gbps)
                hidden = max(0.0, comm - 2 * compute / 3)
                cells.append(f"{compute / (compute + comm):.2f}/{compute / (compute + hidden):.2f}")
            row = "  ".join(f"{h:>2}:{c}" for h, c in zip(HOSTS, cells, strict=True))
            print(f"    {gbps:3d} Gb/s  {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.iterations)
        return
    from caffelite.mnist import load_mnist, write_lmdb

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        images, labels = load_mnist(
            SHARED_MNIST / "train-images-idx3-ubyte.gz", SHARED_MNIST / "train-labels-idx1-ubyte.gz"
        )
        write_lmdb(str(workdir / "data/mnist/mnist_train_lmdb"), images[:RECORDS], labels[:RECORDS])
        (workdir / "data/mnist/mnist_test_lmdb").mkdir()  # the TEST layer is not built
        results: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for ranks in (1, 2):
                results[ranks].append(measure(workdir, ranks, args.iterations))
    print(f"LeNet, global batch {GLOBAL_BATCH}, {args.iterations} iterations x {args.rounds}")
    print("setup               images/s  ms/iter  wait ms/iter  all-reduce ms")
    medians = {}
    for ranks, label in ((1, "1 rank x 2 threads"), (2, "2 ranks x 1 thread")):
        rows = results[ranks]
        med = {
            k: statistics.median(r[k] for r in rows)
            for k in rows[0]
            if isinstance(rows[0][k], float)
        }
        medians[ranks] = med
        wait = f"{med['wait_ms_per_iter']:12.2f}" if "wait_ms_per_iter" in med else " " * 12
        reduce = f"{med['allreduce_ms']:14.2f}" if "allreduce_ms" in med else ""
        speed = f"{med['images_per_s']:8.0f}  {med['ms_per_iter']:7.1f}"
        print(f"{label:<19} {speed}  {wait}  {reduce}")
    ratio = medians[2]["images_per_s"] / medians[1]["images_per_s"]
    print(f"2 ranks / 1 rank images/s: {ratio:.2f}")
    # Compute rate of one rank: its iteration minus its wait, at batch 64, one thread.
    per_rank_s = (medians[2]["ms_per_iter"] - medians[2]["wait_ms_per_iter"]) / 1000
    lenet_params, lenet_macs, lenet_batch = MODELS["LeNet"]
    cost_model(3 * 2 * lenet_macs * lenet_batch / per_rank_s)


if __name__ == "__main__":
    main()
