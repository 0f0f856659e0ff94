"""caffelite.io: pycaffe's caffe.io conversions between arrays, BlobProtos and Datums."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import io as cio
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


def test_array_to_blobproto_writes_shape_form_and_round_trips():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    blob = cio.array_to_blobproto(arr)
    assert list(blob.shape.dim) == [2, 3, 4]
    for legacy in ("num", "channels", "height", "width"):
        assert not blob.HasField(legacy)
    assert len(blob.diff) == 0
    back = cio.blobproto_to_array(blob)
    assert back.dtype == np.float64 and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr.astype(np.float64))


def test_array_to_blobproto_with_diff():
    arr = np.arange(6.0).reshape(2, 3)
    diff = -np.arange(6.0).reshape(2, 3) / 2
    blob = cio.array_to_blobproto(arr, diff)
    np.testing.assert_array_equal(cio.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(cio.blobproto_to_array(blob, return_diff=True), diff)
    with pytest.raises(CaffeliteError, match=r"diff shape \(3,\) differs from data shape \(2, 3\)"):
        cio.array_to_blobproto(arr, np.zeros(3))


def test_blobproto_legacy_4d_form():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=2, width=3)
    blob.data.extend(range(12))
    blob.shape.dim.extend([12])  # the legacy fields win, as in pycaffe
    out = cio.blobproto_to_array(blob)
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(out.ravel(), np.arange(12))
    assert out[0, 1, 0, 2] == 8


def test_blobproto_double_data_and_size_error():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.double_data.extend([0.1, 0.2, 0.3, 1e-300])
    np.testing.assert_array_equal(
        cio.blobproto_to_array(blob), np.array([[0.1, 0.2], [0.3, 1e-300]])
    )
    bad = caffe_pb2.BlobProto()
    bad.shape.dim.extend([2, 3])
    bad.data.extend([1, 2, 3])
    with pytest.raises(CaffeliteError, match=r"shape \(2, 3\) carries 3 data values, expected 6"):
        cio.blobproto_to_array(bad)


def test_shape_errors_are_value_errors_as_in_pycaffe():
    """pycaffe's numpy reshape raises ValueError; code catching it keeps working."""
    no_shape = caffe_pb2.BlobProto()
    no_shape.data.extend([0.0] * 100)
    with pytest.raises(ValueError, match=r"shape \(\) carries 100 data values, expected 1"):
        cio.blobproto_to_array(no_shape)
    scalar = caffe_pb2.BlobProto()
    scalar.data.append(123.0)
    assert cio.blobproto_to_array(scalar) == 123.0
    with pytest.raises(ValueError, match="3-D"):
        cio.array_to_datum(np.zeros((2, 2)))
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(ValueError, match="carries 3 data bytes, expected 4"):
        cio.datum_to_array(datum)
    with pytest.raises(ValueError, match="diff shape"):
        cio.array_to_blobproto(np.zeros(3), diff=np.zeros(2))
    assert issubclass(cio.ArrayShapeError, CaffeliteError)


def test_blobprotovector_string_round_trip():
    arrays = [np.arange(6.0).reshape(1, 2, 3), np.array([1.5, -2.0]), np.zeros((2, 1, 1, 2))]
    data = cio.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(data, bytes)
    vec = caffe_pb2.BlobProtoVector.FromString(data)
    assert len(vec.blobs) == 3
    back = cio.blobprotovector_str_to_arraylist(data)
    assert [a.shape for a in back] == [a.shape for a in arrays]
    for got, want in zip(back, arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_datum_uint8_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    datum = cio.array_to_datum(arr, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 4, 5, 7)
    assert datum.data == arr.tobytes() and len(datum.float_data) == 0
    parsed = caffe_pb2.Datum.FromString(datum.SerializeToString())
    back = cio.datum_to_array(parsed)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, arr)
    # a non-contiguous view is stored in C order
    view = np.ascontiguousarray(arr.transpose(0, 2, 1)).transpose(0, 2, 1)
    np.testing.assert_array_equal(cio.datum_to_array(cio.array_to_datum(view)), arr)


def test_datum_float_round_trip():
    arr = np.linspace(-1, 1, 12).reshape(1, 3, 4)
    datum = cio.array_to_datum(arr)
    assert not datum.data and len(datum.float_data) == 12
    assert not datum.HasField("label")
    back = cio.datum_to_array(datum)
    assert back.dtype == np.float64 and back.shape == (1, 3, 4)
    np.testing.assert_allclose(back, arr, rtol=1e-7)  # float_data is single precision


def test_datum_errors():
    with pytest.raises(CaffeliteError, match=r"3-D \(channels, height, width\).*\(28, 28\)"):
        cio.array_to_datum(np.zeros((28, 28), np.uint8))
    encoded = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"\x89PNG", encoded=True)
    with pytest.raises(CaffeliteError, match="encoded"):
        cio.datum_to_array(encoded)
    short = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(CaffeliteError, match=r"carries 3 data bytes, expected 4"):
        cio.datum_to_array(short)
    floats = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[1.0])
    with pytest.raises(CaffeliteError, match=r"carries 1 float_data values, expected 4"):
        cio.datum_to_array(floats)
