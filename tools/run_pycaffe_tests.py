#!/usr/bin/env python3
"""Run Caffe's own pycaffe test suite (python/caffe/test) with caffelite as ``caffe``.

    python tools/run_pycaffe_tests.py CAFFE_CHECKOUT [pytest arguments...]

CAFFE_CHECKOUT is a BVLC/caffe source tree (``git clone https://github.com/BVLC/caffe``);
nothing of it is built or installed. Its tests run under pytest through
``python -m caffelite.as_caffe``, in a scratch directory (test_solver writes snapshots
into the working directory), with the checkout's python/ kept off sys.path so that
``import caffe`` can only mean caffelite. test_draw draws every net prototxt under the
checkout's models/ and examples/ as PNG, so it needs Graphviz's ``dot``. Caffe's tests
also import ``six``, and the draw test wants pydot for pycaffe's API:
``pip install six pydot``. The exit status is pytest's.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

MISSING_HELP = {"six": "pip install six", "pytest": "pip install pytest"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    checkout, pytest_args = os.path.abspath(argv[0]), argv[1:]
    tests = os.path.join(checkout, "python", "caffe", "test")
    if not os.path.isdir(tests):
        print(f"run_pycaffe_tests: {tests} does not exist: give a Caffe checkout", file=sys.stderr)
        return 2
    missing = [name for name in MISSING_HELP if importlib.util.find_spec(name) is None]
    if missing:
        hints = "; ".join(MISSING_HELP[name] for name in missing)
        print(
            f"run_pycaffe_tests: Caffe's tests need {', '.join(missing)} ({hints})", file=sys.stderr
        )
        return 2
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    # caffelite from this checkout; never the Caffe checkout's python/ (its caffe package).
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if os.path.abspath(p) != os.path.join(checkout, "python")]
    env["PYTHONPATH"] = os.pathsep.join([here, *paths])
    command = [sys.executable, "-m", "caffelite.as_caffe", "-m", "pytest", "-p", "no:cacheprovider"]
    with tempfile.TemporaryDirectory(prefix="pycaffe-tests-") as scratch:
        return subprocess.call([*command, tests, *pytest_args], cwd=scratch, env=env)


if __name__ == "__main__":
    sys.exit(main())
