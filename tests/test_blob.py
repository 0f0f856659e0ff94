"""Blob: shape, memory reuse, lazy diff, sharing, and BlobProto conversion."""

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


def test_shape_count_and_legacy_accessors():
    blob = Blob(2, 3, 4, 5)
    assert blob.shape == (2, 3, 4, 5) and blob.num_axes == 4
    assert blob.count == 120 and blob.count(1) == 60 and blob.count(1, 3) == 12
    assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
    assert Blob(7, 8).height == 1  # missing legacy axes read as 1
    assert blob.shape_at(-1) == 5 and blob.canonical_axis_index(-2) == 2
    assert blob.dtype == np.float32 and blob.data.dtype == np.float32
    with pytest.raises(CaffeliteError, match="axis 4 out of range"):
        blob.canonical_axis_index(4)
    with pytest.raises(CaffeliteError, match="legacy accessors need at most 4 axes"):
        _ = Blob(1, 1, 1, 1, 1).num


def test_reshape_forms_and_memory_reuse():
    blob = Blob((4, 6))
    buffer = blob.data.base
    blob.reshape(2, 3)
    assert blob.shape == (2, 3) and blob.data.base is buffer  # fits: same memory
    blob.reshape([3, 8])
    assert blob.data.base is buffer
    blob.reshape(caffe_pb2.BlobShape(dim=[5, 5]))
    assert blob.shape == (5, 5) and blob.data.base is not buffer  # grew: new memory
    with pytest.raises(CaffeliteError, match="negative dimension"):
        blob.reshape(2, -1)


def test_reshape_to_the_same_shape_keeps_the_views():
    """Layers reshape their tops before every forward: an unchanged shape costs nothing."""
    blob = Blob(2, 3)
    data, diff = blob.data, blob.diff
    data[...] = 5.0
    blob.reshape(2, 3)
    assert blob.data is data and blob.diff is diff and np.all(blob.data == 5.0)
    blob.reshape(3, 2)
    assert blob.data is not data and blob.data.shape == (3, 2)


def test_diff_is_allocated_on_demand_and_follows_reshape():
    blob = Blob(2, 3)
    assert not blob.has_diff
    blob.diff[...] = 1.0
    assert blob.has_diff and blob.diff.shape == (2, 3)
    blob.reshape(3, 2)
    assert blob.diff.shape == (3, 2)
    blob.reshape(10, 10)
    assert blob.diff.shape == (10, 10) and not blob.diff.any()


def test_share_data_and_diff():
    owner, user = Blob(2, 3), Blob(6)
    user.share_data(owner)
    user.share_diff(owner)
    owner.data[...] = 4.0
    user.diff[...] = 2.0
    assert np.all(user.data == 4.0) and np.all(owner.diff == 2.0)
    with pytest.raises(CaffeliteError, match=r"\(5,\) and \(2, 3\)"):
        Blob(5).share_data(owner)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_proto_round_trip(dtype):
    with backend.precision(dtype):
        blob = Blob(2, 3)
    blob.data[...] = np.arange(6).reshape(2, 3) / 7.0
    blob.diff[...] = -np.arange(6).reshape(2, 3)
    proto = blob.to_proto(write_diff=True)
    single = dtype == np.float32
    assert len(proto.data if single else proto.double_data) == 6
    assert len(proto.double_data if single else proto.data) == 0
    wire = caffe_pb2.BlobProto.FromString(proto.SerializeToString())
    assert list(wire.shape.dim) == [2, 3]
    copy = Blob()
    copy.from_proto(wire)
    np.testing.assert_allclose(copy.data, blob.data, rtol=1e-7)
    np.testing.assert_array_equal(copy.diff, blob.diff)


def test_from_legacy_4d_proto_and_errors():
    proto = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=list(range(6)))
    blob = Blob()
    blob.from_proto(proto)
    assert blob.shape == (1, 2, 1, 3) and blob.data[0, 1, 0, 2] == 5
    with pytest.raises(CaffeliteError, match=r"file has \(1, 2, 1, 3\), blob has \(6,\)"):
        Blob(6).from_proto(proto, reshape=False)
    short = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[4]), data=[1.0, 2.0])
    with pytest.raises(CaffeliteError, match="carries 2 values, expected 4"):
        Blob().from_proto(short)
