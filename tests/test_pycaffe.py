"""The ``caffe.pycaffe`` module path, and Caffe's own pycaffe test suite run against
caffelite (tools/run_pycaffe_tests.py) when a Caffe checkout is given in CAFFE_ROOT."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import caffelite
from caffelite import pycaffe

REPO = Path(__file__).resolve().parents[1]


def test_pycaffe_module_holds_the_classes_pycaffe_code_imports():
    for name in ("Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver", "Timer", "NCCL"):  # fmt: skip
        assert getattr(pycaffe, name) is getattr(caffelite, name)


def test_runner_refuses_a_path_that_is_not_a_caffe_checkout(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "run_pycaffe_tests.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{tmp_path}/python/caffe/test does not exist" in result.stderr


def test_caffes_own_pycaffe_suite_passes():
    """Set CAFFE_ROOT to a BVLC/caffe checkout to run its python/caffe/test (~40 s)."""
    root = os.environ.get("CAFFE_ROOT")
    if not root or not (Path(root) / "python" / "caffe" / "test").is_dir():
        pytest.skip("set CAFFE_ROOT to a Caffe source checkout to run its pycaffe suite")
    pytest.importorskip("six", reason="Caffe's tests import six")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "run_pycaffe_tests.py"),
            root,
            "-q",
            "-W",
            "ignore::DeprecationWarning",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(.*\))?", summary), summary
