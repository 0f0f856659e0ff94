"""benchmarks/gpu_check.sh's parts that need no GPU: the refusal, the wheel list, the table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_without_a_gpu_the_script_says_so_and_stops():
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        timeout=60,
    )
    assert done.returncode == 2
    assert "no CUDA device visible to CuPy" in done.stderr and "--dry-run" in done.stderr


def test_wheels_supply_what_is_missing_or_too_old(gpu_check, monkeypatch):
    installed = {"numpy": "2.0.0", "protobuf": "5.29.0", "tqdm": "4.66.0", "numba": "0.61.0"}

    def version(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr("importlib.metadata.version", version)
    needed = gpu_check.missing_requirements()
    names = [text.split(">")[0].split("=")[0] for text in needed]
    # lmdb is absent, protobuf older than caffe_pb2 needs; an old numba stays (the GPU
    # machine's CUDA stack is built against it)
    assert names == ["protobuf", "lmdb"]


def test_table_compares_with_pytorch(gpu_check, tmp_path, capsys):
    bench = {
        "torch": True,
        "dry_run": False,
        "caffelite_lenet_train": {"ms": [1.5, 1.2, 1.3]},
        "torch_lenet_train": {"ms": [1.0, 1.0, 2.0]},
        "caffelite_lenet_graph": {"available": False},
        "caffelite_resnet50": {"error": "out of memory"},
        "torch_resnet50": {"ms": [40.0]},
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    train = {"wall_s": 25.04, "accuracies": {"10000": 0.9912}, "final_accuracy": 0.9912}
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "tests.log").write_text("....\n===== 12 passed in 3.0s =====\n")
    gpu_check.main(["table", "--results", str(tmp_path)])
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()}
    assert "| 1.30 ms | 1.00 ms | 1.30x |" in rows["LeNet train step, batch 64"]
    assert "| not available |" in rows["LeNet train step, CUDA graph"]
    assert "| failed | 40.00 ms |" in rows["ResNet-50 forward+backward, batch 32"]
    assert "12 passed in 3.0s" in rows["GPU tests (pytest -m gpu)"]
    assert "25.0 s" in rows["LeNet 10,000 iterations + tests, wall"]
    assert "0.9912" in rows["LeNet final test accuracy"]
