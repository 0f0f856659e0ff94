#!/usr/bin/env python3
"""Compute the mean image of an LMDB or LevelDB of Datums (Caffe's compute_image_mean).

    python tools/compute_image_mean.py [FLAGS] INPUT_DB [OUTPUT_FILE]

OUTPUT_FILE is a mean.binaryproto for transform_param.mean_file; the per-channel
means are logged either way.
"""

from __future__ import annotations

import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite.datasets.image_mean import compute_image_mean
from caffelite.tool_flags import CaffeFlags, run_tool


def main(argv=None) -> int:
    flags = CaffeFlags(
        "compute_image_mean", "%(prog)s [FLAGS] INPUT_DB [OUTPUT_FILE]", __doc__.splitlines()[0]
    )
    flags.add("backend", "lmdb", "the backend {leveldb, lmdb} containing the images")
    args = flags.parse(argv, ["input_db", "output_file?"])
    return run_tool(
        "compute_image_mean",
        lambda: compute_image_mean(args.input_db, args.output_file, args.backend),
    )


if __name__ == "__main__":
    sys.exit(main())
