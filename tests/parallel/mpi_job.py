"""Helpers for the MPI tests: a small LeNet working directory and a launched job whose
output is followed line by line (the tests start the venv's own mpiexec)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from caffelite.mnist import load_mnist, write_lmdb
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_binary

REPO = Path(__file__).resolve().parents[2]
#: ``caffelite train`` inside ``backend.precision(dtype)``: the CLI, in float64 if asked.
DRIVER = (
    "import sys, numpy; from caffelite import backend, cli\n"
    "with backend.precision(numpy.dtype(sys.argv[1])):\n"
    "    sys.exit(cli.main(['train', *sys.argv[2:]]))\n"
)


def mpiexec() -> str | None:
    """The launcher of the environment's MPI (the mpich wheel's), else one on PATH."""
    from caffelite.parallel.mpi import launcher

    return launcher()


def make_lenet_dir(root: Path, mnist_dir: Path, train_records: int, test_records: int) -> Path:
    """data/mnist/mnist_{train,test}_lmdb holding the first records of the real MNIST, and
    LeNet's train/test net at batch 64 (net64) and 128 (net128)."""
    for split, name, count in (("train", "train", train_records), ("t10k", "test", test_records)):
        images, labels = load_mnist(
            mnist_dir / f"{split}-images-idx3-ubyte.gz",
            mnist_dir / f"{split}-labels-idx1-ubyte.gz",
        )
        write_lmdb(str(root / f"data/mnist/mnist_{name}_lmdb"), images[:count], labels[:count])
    net = (REPO / "models/lenet/lenet_train_test.prototxt").read_text()
    assert "batch_size: 64" in net
    (root / "net64.prototxt").write_text(net)
    (root / "net128.prototxt").write_text(net.replace("batch_size: 64", "batch_size: 128"))
    return root


def write_solver(root: Path, name: str, batch: int, prefix: str, **fields) -> str:
    """LeNet's solver settings (lenet_solver.prototxt) with the given fields changed."""
    settings = dict(
        test_iter=10,
        test_interval=100,
        base_lr=0.01,
        momentum=0.9,
        weight_decay=0.0005,
        lr_policy='"inv"',
        gamma=0.0001,
        power=0.75,
        display=50,
        max_iter=100,
        snapshot=50,
        random_seed=1701,
    )
    settings.update(fields)
    lines = [f'net: "net{batch}.prototxt"', f'snapshot_prefix: "{prefix}"']
    lines += [f"{key}: {value}" for key, value in settings.items()]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    (root / prefix).parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def weights(caffemodel: Path) -> dict[str, np.ndarray]:
    """Every parameter blob of a .caffemodel, exactly as stored (float or double)."""
    param = read_binary(str(caffemodel), caffe_pb2.NetParameter())
    out = {}
    for layer in param.layer:
        for j, blob in enumerate(layer.blobs):
            values = blob.double_data if len(blob.double_data) else blob.data
            out[f"{layer.name}/{j}"] = np.asarray(values, dtype=np.float64)
    return out


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


class Job:
    """A training run (``ranks`` > 0: under mpiexec -n ranks), its output followed."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        ranks: int = 0,
        dtype: str = "float32",
        env: dict[str, str] | None = None,
    ):
        command = [sys.executable, "-c", DRIVER, dtype, *args]
        if ranks:
            command = [mpiexec(), "-n", str(ranks), *command]
        threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env = {**os.environ, **threads, **(env or {})}
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        """The first output line containing ``text`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} in the output:\n{self.output}")

    def finish(self, timeout: float = 300.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"the job did not end in {timeout} s:\n{self.output}") from None
        self.close()
        return code

    def close(self) -> None:
        """End the job if it still runs and release its output pipe."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self._reader.join(10)
        self.process.stdout.close()

    def rank_pid(self, rank: int) -> int:
        line = self.wait_for(f"Rank {rank} of ")
        return int(line.split(": pid ")[1].split()[0])
