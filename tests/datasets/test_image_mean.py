"""compute_image_mean: Caffe's mean.binaryproto from raw, float and encoded databases."""

from __future__ import annotations

import io

import numpy as np
import pytest

from caffelite import db
from caffelite.data_transformer import load_mean_file
from caffelite.datasets.image_mean import compute_image_mean
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


def write(path, datums, backend="lmdb"):
    with db.Writer(path, backend) as writer:
        for i, datum in enumerate(datums):
            writer.put(b"%08d" % i, datum.SerializeToString())
    return str(path)


def raw(image: np.ndarray) -> caffe_pb2.Datum:
    c, h, w = image.shape
    return caffe_pb2.Datum(channels=c, height=h, width=w, data=image.tobytes(), label=0)


def test_mean_of_raw_records_is_written_as_caffe_does(tmp_path, caplog):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 4, 5), dtype=np.uint8)
    source = write(tmp_path / "raw", [raw(im) for im in images])
    out = tmp_path / "mean.binaryproto"
    with caplog.at_level("INFO", logger="caffelite"):
        mean = compute_image_mean(source, str(out))
    np.testing.assert_allclose(mean, images.mean(axis=0), rtol=1e-6)
    blob = caffe_pb2.BlobProto.FromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 4, 5)
    assert not blob.HasField("shape")
    np.testing.assert_array_equal(load_mean_file(str(out)), mean)
    first = images.reshape(7, 3, -1).mean(axis=(0, 2))[0]
    assert f"mean_value channel [0]: {first:g}" in caplog.text


def test_float_and_encoded_records(tmp_path):
    floats = [caffe_pb2.Datum(channels=1, height=1, width=2, float_data=[v, 2 * v]) for v in (1, 4)]
    np.testing.assert_allclose(compute_image_mean(write(tmp_path / "f", floats)), [[[2.5, 5.0]]])
    image_module = pytest.importorskip("PIL.Image")
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    buffer = io.BytesIO()
    image_module.fromarray(grey).save(buffer, format="PNG")
    encoded = caffe_pb2.Datum(data=buffer.getvalue(), encoded=True)
    mean = compute_image_mean(write(tmp_path / "e", [encoded, raw(np.zeros((1, 3, 4), np.uint8))]))
    np.testing.assert_allclose(mean, grey[None] / 2)


def test_leveldb_and_errors(tmp_path):
    pytest.importorskip("plyvel")
    images = [np.full((1, 2, 2), v, np.uint8) for v in (10, 20)]
    assert compute_image_mean(
        write(tmp_path / "l", map(raw, images), "leveldb"), backend="leveldb"
    )[0, 0, 0] == pytest.approx(15)
    mixed = write(tmp_path / "m", [raw(images[0]), raw(np.zeros((1, 3, 2), np.uint8))])
    with pytest.raises(
        CaffeliteError, match=r"record b'00000001' has shape \(1, 3, 2\).*\(1, 2, 2\)"
    ):
        compute_image_mean(mixed)
    with pytest.raises(CaffeliteError, match="is empty"):
        compute_image_mean(write(tmp_path / "empty", []))
