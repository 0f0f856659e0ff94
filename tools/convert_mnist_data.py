#!/usr/bin/env python3
"""Convert MNIST to an LMDB of Caffe Datum records (Caffe's convert_mnist_data).

    python tools/convert_mnist_data.py IMAGES LABELS OUT_LMDB
    python tools/convert_mnist_data.py --csv mnist_train.csv OUT_LMDB

IMAGES and LABELS are IDX files, gzip-compressed or not. Records are keyed
'%08d' % index in file order; an existing database is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.mnist import load_mnist, read_mnist_csv, write_lmdb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        usage="%(prog)s IMAGES LABELS OUT_LMDB | %(prog)s --csv CSV OUT_LMDB",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--csv", metavar="CSV", help="read a label,pixel... CSV instead of IDX")
    parser.add_argument(
        "--backend", default="lmdb", help="database type; only lmdb is supported (lmdb)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing database")
    parser.add_argument("--limit", type=int, help="convert only the first N images")
    args = parser.parse_args(argv)
    want = 1 if args.csv else 3
    if len(args.paths) != want:
        parser.error(
            "expected OUT_LMDB after --csv CSV" if args.csv else "expected IMAGES LABELS OUT_LMDB"
        )
    if args.backend.lower() != "lmdb":
        parser.error(f"backend {args.backend!r} is not supported; use lmdb")
    if args.limit is not None and args.limit <= 0:
        parser.error("--limit must be positive")
    out = args.paths[-1]
    try:
        if os.path.exists(out) and not args.overwrite:
            raise CaffeliteError(f"{out!r} already exists; pass --overwrite to replace it")
        if args.csv:
            images, labels = read_mnist_csv(args.csv)
        else:
            images, labels = load_mnist(args.paths[0], args.paths[1])
        if args.limit is not None:
            images, labels = images[: args.limit], labels[: args.limit]
        count = write_lmdb(out, images, labels, overwrite=args.overwrite)
    except CaffeliteError as exc:
        print(f"convert_mnist_data: error: {exc}", file=sys.stderr)
        return 1
    rows, cols = images.shape[1:]
    print(f"A total of {count} items. Rows: {rows} Cols: {cols}")
    per_label = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
    print("Per label: " + " ".join(f"{d}:{c}" for d, c in enumerate(per_label.tolist())))
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
