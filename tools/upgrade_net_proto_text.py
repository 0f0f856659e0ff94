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
from caffelite.upgrade import upgrade_net_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="the text (prototxt) net in an old format")
    parser.add_argument("output", help="where to write the upgraded text (prototxt) net")
    args = parser.parse_args(argv)
    try:
        changed = upgrade_net_file(args.input, args.output, binary=False)
    except CaffeliteError as exc:
        print(f"upgrade_net_proto_text: {exc}", file=sys.stderr)
        return 1
    if not changed:
        print(f"{args.input} is already in the current format", file=sys.stderr)
    print(f"Wrote upgraded NetParameter text proto to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
