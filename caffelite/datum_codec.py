"""Encoded Datums (``encoded: true``, a JPEG/PNG file in ``data``) to raw pixel Datums,
as Caffe's DecodeDatum / DecodeDatumNative do, for whole batches at a time.

The Data layer decodes in its prefetch thread. Pillow releases the GIL while it
decodes, so a batch is spread over a small pool of threads shared by all readers
of the process: ``CAFFELITE_DECODE_THREADS`` sets its size (default: the number of
cores, at most 4; 1 decodes in the calling thread).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from caffelite.errors import CaffeliteError
from caffelite.image_codec import decode_image
from caffelite.proto import caffe_pb2

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def decode_threads() -> int:
    """How many threads decode a batch (``CAFFELITE_DECODE_THREADS``)."""
    text = os.environ.get("CAFFELITE_DECODE_THREADS")
    if text is None:
        return max(1, min(4, os.cpu_count() or 1))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CaffeliteError(f"CAFFELITE_DECODE_THREADS must be a positive integer, got {text!r}")
    return value


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers != threads:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="caffelite-decode")
        return _pool


def decode_datum(datum, color: bool | None = None, what: str = "datum"):
    """A raw-pixel copy of an encoded Datum (label kept); a raw one is returned as is."""
    if not datum.encoded:
        return datum
    pixels = decode_image(datum.data, color, what=f"encoded {what}")
    channels, height, width = pixels.shape
    return caffe_pb2.Datum(
        channels=channels, height=height, width=width, data=pixels.tobytes(), label=datum.label
    )


def decode_datums(datums, keys, source: str, color: bool | None = None) -> list:
    """``decode_datum`` over a batch, on the decode threads when more than one is encoded."""
    whats = [f"record {key!r} of {source}" for key in keys]
    encoded = sum(1 for d in datums if d.encoded)
    threads = decode_threads() if encoded > 1 else 1
    if threads == 1:
        return [decode_datum(d, color, w) for d, w in zip(datums, whats, strict=True)]
    return list(_executor(threads).map(lambda d, w: decode_datum(d, color, w), datums, whats))
