#!/usr/bin/env python3
"""Convert CIFAR-10's binary batches to LMDB or LevelDB (Caffe's convert_cifar_data).

    python tools/convert_cifar_data.py INPUT_FOLDER OUTPUT_FOLDER DB_TYPE

INPUT_FOLDER holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin (the
"binary version", gunzipped and untarred); OUTPUT_FOLDER gets cifar10_train_DB_TYPE
and cifar10_test_DB_TYPE. For models/cifar10, then make the mean:

    python tools/convert_cifar_data.py cifar-10-batches-bin data/cifar10 lmdb
    python tools/compute_image_mean.py data/cifar10/cifar10_train_lmdb data/cifar10/mean.binaryproto
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite.datasets.cifar import convert_cifar_data
from caffelite.tool_flags import run_tool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input_folder")
    parser.add_argument("output_folder")
    parser.add_argument("db_type", choices=["lmdb", "leveldb"])
    args = parser.parse_args(argv)

    def convert() -> None:
        counts = convert_cifar_data(args.input_folder, args.output_folder, args.db_type)
        for path, count in counts.items():
            print(f"Wrote {count} images to {path}")

    return run_tool("convert_cifar_data", convert)


if __name__ == "__main__":
    sys.exit(main())
