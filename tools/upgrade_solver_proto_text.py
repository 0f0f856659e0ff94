#!/usr/bin/env python3
"""Rewrite a solver prototxt in the current format (Caffe's upgrade_solver_proto_text).

    python tools/upgrade_solver_proto_text.py OLD_solver.prototxt NEW_solver.prototxt

The legacy ``solver_type: SGD`` enum (SGD, NESTEROV, ADAGRAD, RMSPROP, ADADELTA, ADAM)
becomes the ``type: "SGD"`` string. A solver already in the current format is written
back unchanged (with a note), as Caffe's tool does; giving both fields is an error.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_text, write_text
from caffelite.solver import upgrade_solver_type


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="the text (prototxt) solver in an old format")
    parser.add_argument("output", help="where to write the upgraded text (prototxt) solver")
    args = parser.parse_args(argv)
    try:
        param = read_text(args.input, caffe_pb2.SolverParameter())
        needs_upgrade = param.HasField("solver_type")
        upgrade_solver_type(param, args.input)
        write_text(args.output, param)
    except CaffeliteError as exc:
        print(f"upgrade_solver_proto_text: {exc}", file=sys.stderr)
        return 1
    if not needs_upgrade:
        print(f"File already in latest proto format: {args.input}", file=sys.stderr)
    print(f"Wrote upgraded SolverParameter text proto to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
