"""Caffe's extract_features: the values of named blobs, mini-batch after mini-batch,
into one database of Datums per blob.

The net runs in TEST phase with the trained weights; each item ``n`` of a blob
becomes a Datum with the blob's legacy channels/height/width (missing axes count
as 1, so an (N, 4096) blob gives 4096 x 1 x 1) and its values as ``float_data``,
under the key ``'%010d'`` of the item's running index, as Caffe writes them.
"""

from __future__ import annotations

import logging

import numpy as np

from caffelite import db
from caffelite.backend import to_numpy
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

logger = logging.getLogger("caffelite")

#: Records per transaction (Caffe commits every 1000).
COMMIT_EVERY = 1000


def extract_features(
    weights: str,
    model: str,
    blob_names: list[str],
    db_names: list[str],
    num_mini_batches: int,
    backend: str = "lmdb",
) -> dict[str, int]:
    """Run ``model`` (with ``weights``) ``num_mini_batches`` times, storing each named
    blob's items in the matching database; returns {blob name: items written}."""
    from caffelite.layer import TEST
    from caffelite.net import Net

    if len(blob_names) != len(db_names):
        raise CaffeliteError(
            f"{len(blob_names)} blob names but {len(db_names)} database names; "
            "the number of blob names and dataset names must be equal"
        )
    if num_mini_batches < 1:
        raise CaffeliteError(f"num_mini_batches must be at least 1, got {num_mini_batches}")
    net = Net(model, TEST, weights=weights)
    unknown = [name for name in blob_names if name not in net.blobs]
    if unknown:
        raise CaffeliteError(f"unknown feature blob name(s) {unknown} in the network {model}")
    writers = []
    try:
        for name in db_names:
            logger.info("Opening dataset %s", name)
            writers.append(db.Writer(name, backend))
        counts = dict.fromkeys(blob_names, 0)
        logger.info("Extracting Features")
        for _ in range(num_mini_batches):
            net.forward()
            for name, writer in zip(blob_names, writers, strict=True):
                counts[name] = _store(net.blobs[name], writer, counts[name])
        for name, writer in zip(blob_names, writers, strict=True):
            writer.commit()
            logger.info(
                "Extracted features of %d query images for feature blob %s", counts[name], name
            )
    finally:
        for writer in writers:
            writer.close()
    logger.info("Successfully extracted the features!")
    return counts


def _store(blob, writer, index: int) -> int:
    """Put each item of ``blob`` as a float Datum; returns the next running index."""
    values = to_numpy(blob.data).astype(np.float32, copy=False).reshape(blob.num, -1)
    for item in values:
        datum = caffe_pb2.Datum(channels=blob.channels, height=blob.height, width=blob.width)
        datum.float_data.extend(item.tolist())
        writer.put(f"{index:010d}", datum.SerializeToString())
        index += 1
        if index % COMMIT_EVERY == 0:
            writer.commit()
            logger.info("Extracted features of %d query images", index)
    return index
