"""Caffe's compute_image_mean: the mean image of a database of Datums, as a BlobProto.

Encoded records are decoded with the channels they have (DecodeDatumNative); every
record must have the first one's size. The sum is kept in float64 (Caffe adds into
the float32 BlobProto, which loses integers past 2**24, about 66,000 images), and the
mean is written as Caffe writes it: num 1 and the legacy channels/height/width fields.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from caffelite import db
from caffelite.datum_codec import decode_datum
from caffelite.errors import CaffeliteError
from caffelite.io import datum_to_array
from caffelite.proto import caffe_pb2
from caffelite.prototxt import write_binary_atomic

logger = logging.getLogger("caffelite")


def compute_image_mean(db_path, output: str | None = None, backend: str | None = None):
    """The (C, H, W) float32 mean of every record of ``db_path``; also written as a
    binaryproto to ``output`` when given. ``backend`` None takes what the files are."""
    total = None
    count = 0
    for key, value in db.read_records(db_path, backend):
        stored = caffe_pb2.Datum.FromString(value)
        if count == 0 and stored.encoded:
            logger.info("Decoding Datum")
        datum = decode_datum(stored, None, f"record {key!r} of {os.fspath(db_path)}")
        try:
            image = datum_to_array(datum)
        except CaffeliteError as exc:
            raise CaffeliteError(f"{db_path}: record {key!r}: {exc}") from None
        if total is None:
            total = np.zeros(image.shape, dtype=np.float64)
            logger.info("Starting iteration")
        elif image.shape != total.shape:
            raise CaffeliteError(
                f"{db_path}: record {key!r} has shape {image.shape}, but the first record has "
                f"{total.shape}; a mean needs images of one size"
            )
        total += image
        count += 1
        if count % 10000 == 0:
            logger.info("Processed %d files.", count)
    if total is None:
        raise CaffeliteError(f"database {os.fspath(db_path)!r} is empty")
    if count % 10000:
        logger.info("Processed %d files.", count)
    mean = (total / count).astype(np.float32)
    if output is not None:
        write_mean(mean, output)
    logger.info("Number of channels: %d", mean.shape[0])
    for channel, value in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        logger.info("mean_value channel [%d]: %g", channel, value)
    return mean


def write_mean(mean: np.ndarray, path: str) -> None:
    """A (C, H, W) mean as Caffe's mean.binaryproto, written atomically."""
    channels, height, width = mean.shape
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    logger.info("Write to %s", path)
    try:
        write_binary_atomic(path, blob)
    except OSError as exc:
        raise CaffeliteError(f"cannot write the mean to {path!r}: {exc.strerror}") from None
