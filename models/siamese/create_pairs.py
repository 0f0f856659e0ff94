"""Write the MNIST pair LMDBs that models/siamese/mnist_siamese_train_test.prototxt reads.

Like Caffe's examples/siamese/convert_mnist_siamese_data: as many pairs as images, each
of two images drawn independently and uniformly at random (so about one pair in ten
shows the same digit), stored as one Datum of 2 x 28 x 28 pixels with label 1 when
the digits match and 0 otherwise. Caffe writes LevelDB; this writes LMDB.

    python models/siamese/create_pairs.py [--mnist DIR] [--out data/siamese]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from caffelite.mnist import load_mnist, write_lmdb  # noqa: E402

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def make_pairs(images, labels, num_pairs=None, rng=None):
    """``num_pairs`` random pairs (default: one per image) of ``images`` (N, H, W) uint8:
    (pairs (num_pairs, 2, H, W) uint8, sim (num_pairs,) int64, 1 for the same label)."""
    rng = np.random.default_rng(rng)
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = len(images) if num_pairs is None else int(num_pairs)
    first = rng.integers(0, len(images), n)
    second = rng.integers(0, len(images), n)
    pairs = np.stack([images[first], images[second]], axis=1)
    sim = (labels[first] == labels[second]).astype(np.int64)
    return pairs, sim


def write_pair_lmdb(path, images, labels, num_pairs=None, rng=None, overwrite=False) -> int:
    """Make the pairs and write them as Caffe Datums to the LMDB ``path``; returns the count."""
    pairs, sim = make_pairs(images, labels, num_pairs, rng)
    return write_lmdb(path, pairs, sim, overwrite=overwrite)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", default="data/mnist", help="folder of the four MNIST files")
    parser.add_argument("--out", default="data/siamese", help="folder for the two LMDBs")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the pairing")
    parser.add_argument("--overwrite", action="store_true", help="replace existing LMDBs")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for split, (image_file, label_file) in SPLITS.items():
        images, labels = load_mnist(
            os.path.join(args.mnist, image_file), os.path.join(args.mnist, label_file)
        )
        path = os.path.join(args.out, f"mnist_siamese_{split}_lmdb")
        count = write_pair_lmdb(path, images, labels, rng=rng, overwrite=args.overwrite)
        print(f"{path}: {count} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
