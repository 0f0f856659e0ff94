#!/usr/bin/env python3
"""Convert a set of images to an LMDB or LevelDB of Caffe Datums (Caffe's convert_imageset).

    python tools/convert_imageset.py [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE has one ``path label`` line per image, the path below ROOTFOLDER. Flags are
Caffe's, in gflags' spelling (-gray, --resize_width=256, -backend leveldb, ...).
"""

from __future__ import annotations

import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite.datasets.imageset import convert_imageset
from caffelite.tool_flags import CaffeFlags, run_tool


def main(argv=None) -> int:
    flags = CaffeFlags(
        "convert_imageset",
        "%(prog)s [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME",
        __doc__.splitlines()[0],
    )
    flags.add("gray", False, "treat images as grayscale ones")
    flags.add("shuffle", False, "randomly shuffle the order of images and their labels")
    flags.add("backend", "lmdb", "the backend {lmdb, leveldb} for storing the result")
    flags.add("resize_width", 0, "width images are resized to")
    flags.add("resize_height", 0, "height images are resized to")
    flags.add("check_size", False, "check that all the datum have the same size")
    flags.add("encoded", False, "store the encoded image in the datum")
    flags.add("encode_type", "", "what type to encode the image as ('png', 'jpg', ...)")
    args = flags.parse(argv, ["root", "listfile", "db_name"])
    return run_tool(
        "convert_imageset",
        lambda: convert_imageset(
            args.root,
            args.listfile,
            args.db_name,
            gray=args.gray,
            shuffle=args.shuffle,
            backend=args.backend,
            resize_height=args.resize_height,
            resize_width=args.resize_width,
            check_size=args.check_size,
            encoded=args.encoded,
            encode_type=args.encode_type,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
