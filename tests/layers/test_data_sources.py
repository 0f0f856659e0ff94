"""The Data layer on encoded (JPEG/PNG) Datums and on LevelDB databases."""

from __future__ import annotations

import io

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from caffelite import db  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.layer import TEST, TRAIN  # noqa: E402
from caffelite.proto import caffe_pb2  # noqa: E402
from caffelite.testing import build_layer  # noqa: E402


def colour(seed: int, height=6, width=5) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 40 + seed, cols * 50, (rows + cols) * 9 + 3 * seed], -1).astype(
        np.uint8
    )


def png_datum(pixels: np.ndarray, label: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    # as convert_imageset --encoded writes it: no shape fields, only data, label, encoded
    return caffe_pb2.Datum(data=buffer.getvalue(), label=label, encoded=True).SerializeToString()


def write_db(path, records, backend="lmdb"):
    with db.Writer(path, backend) as writer:
        for i, value in enumerate(records):
            writer.put(b"%08d_img%d.png" % (i, i), value)
    return str(path)


def data_layer(source, batch_size, param="", transform="", phase=TRAIN):
    text = (
        f'type: "Data" data_param {{ source: "{source}" batch_size: {batch_size} {param} }} '
        f"transform_param {{ {transform} }}"
    )
    layer, bottom, top = build_layer(text, [], num_top=2, phase=phase, dtype=np.float32)
    return layer, top


def forward(layer, top):
    layer.forward([], top)
    return top[0].data.copy(), top[1].data.copy()


def bgr(rgb):
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def test_encoded_png_decodes_to_bgr_in_key_order(tmp_path):
    images = [colour(s) for s in range(3)]
    source = write_db(tmp_path / "png_lmdb", [png_datum(p, 10 + i) for i, p in enumerate(images)])
    layer, top = data_layer(source, 2)
    try:
        assert top[0].shape == (2, 3, 6, 5)
        data, labels = forward(layer, top)
        np.testing.assert_array_equal(labels, [10, 11])
        np.testing.assert_array_equal(data, np.stack([bgr(images[0]), bgr(images[1])]))
        data, labels = forward(layer, top)  # wraps
        np.testing.assert_array_equal(labels, [12, 10])
        np.testing.assert_array_equal(data[0], bgr(images[2]))
    finally:
        layer.close()


def test_force_gray_force_color_and_force_encoded_color(tmp_path):
    rgb = colour(1)
    grey = rgb[:, :, 0]
    source = write_db(tmp_path / "mixed", [png_datum(rgb, 0), png_datum(grey, 1)])
    cases = [
        ("", "force_gray: true", 1),
        ("", "force_color: true", 3),
        ("force_encoded_color: true", "", 3),
    ]
    for param, transform, channels in cases:
        layer, top = data_layer(source, 2, param, transform)
        try:
            data, _ = forward(layer, top)
        finally:
            layer.close()
        assert data.shape == (2, channels, 6, 5)
        if channels == 1:
            np.testing.assert_array_equal(data[0, 0], np.asarray(Image.fromarray(rgb).convert("L")))
            np.testing.assert_array_equal(data[1, 0], grey)
        else:
            np.testing.assert_array_equal(data[0], bgr(rgb))
            np.testing.assert_array_equal(data[1], np.repeat(grey[None], 3, 0).astype(np.float32))
    # unforced, a grey image after a colour one is a shape mismatch within the batch
    layer, top = data_layer(source, 2)
    try:
        with pytest.raises(CaffeliteError, match=r"has shape \(1, 6, 5\), but the batch started"):
            forward(layer, top)
    finally:
        layer.close()
    with pytest.raises(CaffeliteError, match="force_color or force_gray, not both"):
        data_layer(source, 2, transform="force_color: true force_gray: true")


def test_encoded_jpeg_with_crop_and_mean(tmp_path):
    rgb = np.kron(colour(2, 4, 4), np.ones((8, 8, 1), np.uint8))  # smooth 32 x 32
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    datum = caffe_pb2.Datum(data=buffer.getvalue(), label=4, encoded=True)
    source = write_db(tmp_path / "jpeg", [datum.SerializeToString()])
    layer, top = data_layer(source, 1, transform="crop_size: 16 mean_value: 100", phase=TEST)
    try:
        data, _ = forward(layer, top)
    finally:
        layer.close()
    expected = bgr(rgb)[:, 8:24, 8:24] - 100
    assert data.shape == (1, 3, 16, 16)
    assert np.abs(data[0] - expected).mean() < 3


def test_leveldb_source_matches_lmdb(tmp_path):
    pytest.importorskip("plyvel")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 2, 3, 4), dtype=np.uint8)
    records = [
        caffe_pb2.Datum(
            channels=2, height=3, width=4, data=image.tobytes(), label=i
        ).SerializeToString()
        for i, image in enumerate(images)
    ]
    results = {}
    for backend in ("lmdb", "leveldb"):
        source = write_db(tmp_path / backend, records, backend)
        layer, top = data_layer(source, 3, f"backend: {backend.upper()}")
        try:
            results[backend] = [forward(layer, top) for _ in range(3)]
        finally:
            layer.close()
    for (data, labels), (ldata, llabels) in zip(results["lmdb"], results["leveldb"], strict=True):
        np.testing.assert_array_equal(data, ldata)
        np.testing.assert_array_equal(labels, llabels)
    np.testing.assert_array_equal(results["leveldb"][1][1], [3, 4, 0])
    np.testing.assert_array_equal(results["leveldb"][0][0], images[:3].astype(np.float32))


def test_leveldb_shared_by_a_train_and_a_test_layer(tmp_path):
    pytest.importorskip("plyvel")
    datum = caffe_pb2.Datum(channels=1, height=1, width=2, data=b"\x05\x06", label=1)
    source = write_db(tmp_path / "shared_leveldb", [datum.SerializeToString()] * 4, "leveldb")
    train, train_top = data_layer(source, 2, phase=TRAIN)
    test, test_top = data_layer(source, 2, phase=TEST)  # LevelDB opens once per process
    try:
        np.testing.assert_array_equal(forward(train, train_top)[0].ravel(), [5, 6, 5, 6])
        np.testing.assert_array_equal(forward(test, test_top)[0].ravel(), [5, 6, 5, 6])
    finally:
        train.close()
        test.close()
