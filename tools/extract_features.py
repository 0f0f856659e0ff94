#!/usr/bin/env python3
"""Extract the features of named blobs into databases (Caffe's extract_features).

    python tools/extract_features.py pretrained_net_param feature_extraction_proto_file \\
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...] \\
        num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]

The net (TEST phase) reads its own input, e.g. a Data layer; each blob's items go to
its dataset as float Datums keyed '%010d'.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite.datasets.features import extract_features
from caffelite.tool_flags import run_tool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pretrained_net_param")
    parser.add_argument("feature_extraction_proto_file")
    parser.add_argument("blob_names", help="comma-separated blob names")
    parser.add_argument("dataset_names", help="comma-separated database paths, one per blob")
    parser.add_argument("num_mini_batches", type=int)
    parser.add_argument("db_type", choices=["lmdb", "leveldb"])
    parser.add_argument("mode", nargs="?", default="CPU", choices=["CPU", "GPU"])
    parser.add_argument("device_id", nargs="?", type=int, default=0)
    args = parser.parse_args(argv)

    def extract() -> None:
        if args.mode == "GPU":
            from caffelite.backend import set_device, set_mode_gpu

            logging.getLogger("caffelite").info("Using GPU, device %d", args.device_id)
            set_mode_gpu()
            set_device(args.device_id)
        extract_features(
            args.pretrained_net_param,
            args.feature_extraction_proto_file,
            args.blob_names.split(","),
            args.dataset_names.split(","),
            args.num_mini_batches,
            args.db_type,
        )

    return run_tool("extract_features", extract)


if __name__ == "__main__":
    sys.exit(main())
