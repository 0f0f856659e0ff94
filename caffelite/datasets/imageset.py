"""Caffe's convert_imageset: image files named in a list file into a database of Datums.

Each list line is ``<path below ROOT> <label>`` (ImageData's format; a ROOT without
its trailing slash gets one). Record ``i``
(the line number, counted from 0 after any shuffle) is stored under the key
``'%08d_%s' % (i, path)``, as Caffe writes it; an image that cannot be read is
logged and skipped, leaving a gap in the numbering as in Caffe.

Raw records hold uint8 (C, H, W) BGR pixels. Encoded records (``encoded`` or an
``encode_type``) hold the file's own bytes when it needs no change (no resize,
the extension is the encoding, and its channels are those asked for), otherwise
the decoded (and resized) pixels encoded again; like Caffe's they carry only
``data``, ``label`` and ``encoded`` (no shape fields).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from caffelite import db
from caffelite.errors import CaffeliteError
from caffelite.files import read_bytes
from caffelite.image_codec import decode_image, encode_image, resize_pixels
from caffelite.layers.image_data import read_image_list
from caffelite.proto import caffe_pb2
from caffelite.rng import get_rng

logger = logging.getLogger("caffelite")

#: Records per transaction (Caffe commits every 1000).
COMMIT_EVERY = 1000


def _extension(path: str) -> str:
    return os.path.splitext(path)[1][1:].lower()


def _matches(path: str, encoding: str) -> bool:
    """Caffe's matchExt: the file's extension names ``encoding`` (jpeg counts as jpg)."""
    ext, encoding = _extension(path), encoding.lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def image_to_datum(
    path: str,
    label: int,
    height: int = 0,
    width: int = 0,
    is_color: bool = True,
    encoding: str = "",
):
    """Caffe's ReadImageToDatum: the Datum of one image file (CaffeliteError if unreadable)."""
    data = read_bytes(path, "image")
    resize = height > 0 and width > 0
    if encoding and not resize and _matches(path, encoding):
        native = decode_image(data, None, what=f"image {path!r}")
        if (native.shape[0] == 3) == is_color:
            return caffe_pb2.Datum(data=data, label=label, encoded=True)
    pixels = decode_image(data, is_color, what=f"image {path!r}")
    if resize:
        pixels = resize_pixels(pixels, height, width)
    if encoding:
        return caffe_pb2.Datum(data=encode_image(pixels, encoding), label=label, encoded=True)
    channels, rows, cols = pixels.shape
    return caffe_pb2.Datum(
        channels=channels, height=rows, width=cols, data=pixels.tobytes(), label=label
    )


def convert_imageset(
    root: str,
    list_file: str,
    db_path: str,
    gray: bool = False,
    shuffle: bool = False,
    backend: str = "lmdb",
    resize_height: int = 0,
    resize_width: int = 0,
    check_size: bool = False,
    encoded: bool = False,
    encode_type: str = "",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the images of ``list_file`` (paths below ``root``) to a new database at
    ``db_path``; returns the number of records written. Arguments are Caffe's flags."""
    lines = read_image_list(list_file)
    if shuffle:
        logger.info("Shuffling data")
        order = get_rng().permutation(len(lines))
        lines = [lines[i] for i in order]
    logger.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        logger.info("encode_type specified, assuming encoded=true.")
    height, width = max(0, resize_height), max(0, resize_width)
    if root and not root.endswith("/"):
        root += "/"  # Caffe concatenates, expecting ROOT/; a missing slash is no reason to fail
    count = 0
    size = None
    with db.Writer(db_path, backend) as writer:
        for line_id, (name, label) in enumerate(lines):
            encoding = encode_type or (_extension(name) if encoded else "")
            if encoded and not encoding:
                logger.warning("Failed to guess the encoding of %r; stored raw", name)
            try:
                datum = image_to_datum(root + name, label, height, width, not gray, encoding)
            except CaffeliteError as exc:
                logger.error("%s; skipped", exc)
                continue
            if check_size:
                size = _check_size(datum, size, list_file, line_id, name)
            writer.put(f"{line_id:08d}_{name}", datum.SerializeToString())
            count += 1
            if count % COMMIT_EVERY == 0:
                writer.commit()
                logger.info("Processed %d files.", count)
                if progress is not None:
                    progress(count)
    if count % COMMIT_EVERY:
        logger.info("Processed %d files.", count)
    if count == 0:
        raise CaffeliteError(f"none of the {len(lines)} images listed in {list_file!r} was read")
    return count


def _check_size(datum, size, list_file: str, line_id: int, name: str):
    """--check_size: every image has the first one's pixel count (decoded, for encoded)."""
    if datum.encoded:
        shape = decode_image(datum.data, None, what=name).shape
        found = shape[0] * shape[1] * shape[2]
    else:
        found = len(datum.data)
    if size is not None and found != size:
        raise CaffeliteError(
            f"{list_file}: image {line_id} ({name!r}) has {found} pixel values, but the first "
            f"image has {size} (--check_size)"
        )
    return found
