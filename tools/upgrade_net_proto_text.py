#!/usr/bin/env python3
"""Rewrite a net prototxt in the current format (Caffe's upgrade_net_proto_text).

    python tools/upgrade_net_proto_text.py OLD.prototxt NEW.prototxt

Legacy V0/V1 ``layers { ... }`` entries become ``layer { ... }`` and net-level
``input``/``input_dim``/``input_shape`` become an Input layer. A net already in the
current format is written back unchanged (with a note).
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
from caffelite.upgrade import upgrade_net


def needs_upgrade(param) -> bool:
    return bool(
        len(param.layers) or len(param.input) or len(param.input_shape) or len(param.input_dim)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="the net prototxt in an old format")
    parser.add_argument("output", help="where to write the upgraded prototxt")
    args = parser.parse_args(argv)
    try:
        param = read_text(args.input, caffe_pb2.NetParameter())
        if needs_upgrade(param):
            upgrade_net(param, args.input)
        else:
            print(f"{args.input} is already in the current format", file=sys.stderr)
        write_text(args.output, param)
    except CaffeliteError as exc:
        print(f"upgrade_net_proto_text: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote upgraded NetParameter text proto to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
