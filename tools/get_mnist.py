#!/usr/bin/env python3
"""Fetch the four MNIST files and verify them (Caffe's data/mnist/get_mnist.sh).

    python tools/get_mnist.py                     # download into data/mnist
    python tools/get_mnist.py --from /path/mnist  # copy from a local directory

Files already present with the right checksum are kept, so rerunning is cheap.
The md5 is checked on the uncompressed content, so any gzip of the originals works.
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
from caffelite.mnist import MNIST_MIRRORS, fetch_mnist


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/mnist", help="target directory (data/mnist)")
    parser.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="copy the files from DIR (the .gz files or their uncompressed forms) "
        "instead of downloading",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="download from URL/<file> (repeatable; default: " + ", ".join(MNIST_MIRRORS) + ")",
    )
    args = parser.parse_args(argv)
    try:
        fetch_mnist(args.out, from_dir=args.from_dir, mirrors=args.mirror or MNIST_MIRRORS)
    except CaffeliteError as exc:
        print(f"get_mnist: error: {exc}", file=sys.stderr)
        return 1
    print(f"MNIST is ready in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
