"""pycaffe's ``caffe.io``: conversions between numpy arrays and Caffe's protobuf messages.

The names and behaviour follow pycaffe so that scripts written for ``caffe.io`` work
unchanged (arrays come back as float64, as pycaffe returns them); errors are
CaffeliteErrors that say what shape or field was expected and what was found.
"""

from __future__ import annotations

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

# ---- BlobProto <-> array ------------------------------------------------------------


def _blobproto_shape(blob) -> tuple[int, ...]:
    """The legacy num/channels/height/width win when any of them is set (as in pycaffe)."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """The data (or diff) of a BlobProto as a float64 array of the blob's shape.

    Blobs saved in double precision (``double_data``) are read from those fields.
    """
    single = blob.diff if return_diff else blob.data
    double = blob.double_diff if return_diff else blob.double_data
    values = np.asarray(double if len(double) and not len(single) else single, dtype=np.float64)
    shape = _blobproto_shape(blob)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        field = "diff" if return_diff else "data"
        raise CaffeliteError(
            f"BlobProto of shape {shape} carries {values.size} {field} values, "
            f"expected {int(np.prod(shape, dtype=np.int64))}"
        )
    return values.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto in the ``shape`` form (no legacy 4-D fields), as pycaffe writes it."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise CaffeliteError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """Serialised BlobProtoVector holding one BlobProto per array."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(str) -> list[np.ndarray]:  # pycaffe's argument name
    """The arrays of a serialised BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(blob) for blob in vec.blobs]


# ---- Datum <-> array ----------------------------------------------------------------


def array_to_datum(arr, label=None):
    """A Datum from a (channels, height, width) array: uint8 goes to the ``data`` bytes,
    any other type to ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise CaffeliteError(
            f"array_to_datum needs a 3-D (channels, height, width) array, got shape {arr.shape}"
        )
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum) -> np.ndarray:
    """The pixels of a raw Datum, shape (channels, height, width): uint8 from ``data``,
    float64 from ``float_data``."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise CaffeliteError(
            "datum_to_array: this Datum holds an encoded (compressed) image; decode it "
            "first, e.g. with PIL.Image.open(io.BytesIO(datum.data))"
        )
    count = int(np.prod(shape, dtype=np.int64))
    if len(datum.data):
        if len(datum.data) != count:
            raise CaffeliteError(
                f"Datum of shape {shape} carries {len(datum.data)} data bytes, expected {count}"
            )
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    if len(datum.float_data) != count:
        raise CaffeliteError(
            f"Datum of shape {shape} carries {len(datum.float_data)} float_data values, "
            f"expected {count}"
        )
    return np.asarray(datum.float_data, dtype=np.float64).reshape(shape)
