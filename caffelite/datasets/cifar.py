"""Caffe's convert_cifar_data: CIFAR-10's binary batches into two databases of Datums.

A batch file is a run of 3,073-byte records: the label byte, then the 32 x 32 red,
green and blue planes. Caffe copies the planes as they are, so these Datums are RGB
(unlike convert_imageset's BGR), and a net trained on Caffe's CIFAR-10 expects that.
``data_batch_1.bin`` .. ``data_batch_5.bin`` become ``cifar10_train_<backend>`` and
``test_batch.bin`` becomes ``cifar10_test_<backend>``, keyed ``'%05d'`` of
``file_index * 10000 + record_index``, as in Caffe.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from caffelite import db
from caffelite.errors import CaffeliteError
from caffelite.files import read_bytes
from caffelite.proto import caffe_pb2

logger = logging.getLogger("caffelite")

SIZE = 32
IMAGE_BYTES = 3 * SIZE * SIZE
RECORD_BYTES = 1 + IMAGE_BYTES
BATCH_SIZE = 10000
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 binary batch: images (N, 3, 32, 32) uint8 RGB and labels (N,) uint8."""
    raw = read_bytes(path, "CIFAR-10 batch")
    if not raw or len(raw) % RECORD_BYTES:
        raise CaffeliteError(
            f"{path}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
            "records (label byte + 3x32x32 pixels); is it the binary version, gunzipped?"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    if len(records) > BATCH_SIZE:
        raise CaffeliteError(f"{path}: {len(records)} records; a batch file holds {BATCH_SIZE}")
    labels = records[:, 0]
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise CaffeliteError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 has 0..9")
    return records[:, 1:].reshape(-1, 3, SIZE, SIZE), labels


def _write(db_path: str, backend: str, batches) -> int:
    count = 0
    with db.Writer(db_path, backend) as writer:
        for file_index, path in batches:
            images, labels = read_cifar_batch(path)
            logger.info("%s: %d images", os.path.basename(path), len(images))
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                datum = caffe_pb2.Datum(
                    channels=3, height=SIZE, width=SIZE, data=image.tobytes(), label=int(label)
                )
                writer.put(f"{file_index * BATCH_SIZE + index:05d}", datum.SerializeToString())
            count += len(images)
    return count


def convert_cifar_data(input_folder: str, output_folder: str, backend: str = "lmdb") -> dict:
    """Write the train and test databases; returns {database path: records written}."""
    backend = db.backend_name(backend)
    train = os.path.join(output_folder, f"cifar10_train_{backend}")
    test = os.path.join(output_folder, f"cifar10_test_{backend}")
    for path in (train, test):
        if os.path.exists(path):
            raise CaffeliteError(f"database {path!r} already exists; remove it first")
    os.makedirs(output_folder, exist_ok=True)
    sources = [os.path.join(input_folder, name) for name in (*TRAIN_FILES, TEST_FILE)]
    missing = [path for path in sources if not os.path.isfile(path)]
    if missing:
        raise CaffeliteError(f"CIFAR-10 binary batches missing: {', '.join(missing)}")
    logger.info("Writing Training data")
    counts = {train: _write(train, backend, list(enumerate(sources[:5])))}
    logger.info("Writing Testing data")
    counts[test] = _write(test, backend, [(0, sources[5])])
    return counts
