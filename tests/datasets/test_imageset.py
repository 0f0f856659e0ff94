"""convert_imageset: Caffe's keys, raw and encoded records, flags, and the Data layer on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from caffelite import db  # noqa: E402
from caffelite.datasets.imageset import convert_imageset  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.image_codec import decode_image, resize_pixels  # noqa: E402
from caffelite.proto import caffe_pb2  # noqa: E402
from caffelite.rng import set_random_seed  # noqa: E402
from caffelite.testing import build_layer  # noqa: E402


def picture(seed: int, height=6, width=8) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 30 + seed, cols * 25, 200 - seed * rows], -1).astype(np.uint8)


@pytest.fixture
def imageset(tmp_path):
    """Three PNGs and a JPEG below tmp_path/images, and list.txt naming them."""
    root = tmp_path / "images"
    (root / "sub dir").mkdir(parents=True)
    names = ["a.png", "sub dir/b.png", "c.png", "d.jpg"]
    pictures = [picture(i) for i in range(4)]
    for name, pixels in zip(names, pictures, strict=True):
        Image.fromarray(pixels).save(root / name)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{name} {10 + i}\n" for i, name in enumerate(names)))
    return str(root) + "/", str(listing), names, pictures


def records(path):
    return [(key.decode(), caffe_pb2.Datum.FromString(v)) for key, v in db.read_records(path)]


def bgr(rgb):
    return rgb[:, :, ::-1].transpose(2, 0, 1)


def test_raw_records_are_bgr_under_caffes_keys(imageset, tmp_path):
    root, listing, names, pictures = imageset
    assert convert_imageset(root, listing, str(tmp_path / "out")) == 4
    got = records(tmp_path / "out")
    assert [key for key, _ in got] == [f"{i:08d}_{name}" for i, name in enumerate(names)]
    for (_, datum), pixels, label in zip(got[:3], pictures[:3], range(10, 13), strict=True):
        assert (datum.channels, datum.height, datum.width, datum.label) == (3, 6, 8, label)
        assert not datum.encoded
        assert datum.data == bgr(pixels).tobytes()


def test_gray_and_resize(imageset, tmp_path):
    root, listing, _, pictures = imageset
    convert_imageset(root, listing, str(tmp_path / "g"), gray=True, resize_height=3, resize_width=5)
    _, datum = records(tmp_path / "g")[0]
    assert (datum.channels, datum.height, datum.width) == (1, 3, 5)
    grey = np.asarray(Image.fromarray(pictures[0]).convert("L"))[None]
    expected = resize_pixels(grey, 3, 5)
    np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8).reshape(1, 3, 5), expected)


def test_encoded_keeps_files_that_need_no_change(imageset, tmp_path):
    root, listing, names, _ = imageset
    convert_imageset(root, listing, str(tmp_path / "enc"), encoded=True)
    got = records(tmp_path / "enc")
    for (_, datum), name in zip(got, names, strict=True):
        assert datum.encoded and datum.channels == 0  # shape fields left unset, as Caffe
        assert datum.data == Path(root + name).read_bytes()
    # re-encoded: a forced type, or a resize
    convert_imageset(root, listing, str(tmp_path / "png"), encode_type="png")
    _, jpeg_as_png = records(tmp_path / "png")[3]
    assert jpeg_as_png.encoded and jpeg_as_png.data[:4] == b"\x89PNG"
    decoded_jpeg = decode_image(Path(root + names[3]).read_bytes())
    np.testing.assert_array_equal(decode_image(jpeg_as_png.data), decoded_jpeg)
    convert_imageset(
        root, listing, str(tmp_path / "r"), encoded=True, resize_height=4, resize_width=4
    )
    _, resized = records(tmp_path / "r")[0]
    assert decode_image(resized.data).shape == (3, 4, 4)


def test_shuffle_numbers_the_shuffled_lines(imageset, tmp_path):
    root, listing, names, _ = imageset
    set_random_seed(5)
    convert_imageset(root, listing, str(tmp_path / "s"), shuffle=True)
    got = records(tmp_path / "s")
    assert [key[:9] for key, _ in got] == [f"{i:08d}_" for i in range(4)]
    order = [names.index(key[9:]) for key, _ in got]
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]
    assert [datum.label for _, datum in got] == [10 + i for i in order]


def test_check_size_and_unreadable_images(imageset, tmp_path, caplog):
    root, listing, names, _ = imageset
    Image.fromarray(picture(9, 5, 5)).save(root + "c.png")
    with pytest.raises(CaffeliteError, match=r"image 2 \('c.png'\) has 75 pixel values.*144"):
        convert_imageset(root, listing, str(tmp_path / "cs"), check_size=True)
    (tmp_path / "images" / "a.png").write_bytes(b"not an image")
    convert_imageset(root, listing, str(tmp_path / "skip"))
    assert [key for key, _ in records(tmp_path / "skip")][0] == "00000001_sub dir/b.png"
    assert "a.png" in caplog.text and "skipped" in caplog.text
    with pytest.raises(CaffeliteError, match="already exists"):
        convert_imageset(root, listing, str(tmp_path / "skip"))


def test_tool_takes_gflags_spellings_and_leveldb(imageset, tmp_path, load_tool):
    pytest.importorskip("plyvel")
    root, listing, names, pictures = imageset
    tool = load_tool("convert_imageset")
    out = str(tmp_path / "ldb")
    argv = ["-backend", "leveldb", root.rstrip("/"), "--gray", listing, "-resize_width=4", out]
    assert tool.main(argv + ["--resize_height", "2", "-noshuffle"]) == 0
    assert db.detect_backend(out) == "leveldb"
    got = records(out)
    assert len(got) == 4 and (got[0][1].channels, got[0][1].height, got[0][1].width) == (1, 2, 4)
    assert tool.main([root, listing, out]) == 1  # exists: an error, not a traceback
    with pytest.raises(SystemExit):
        tool.main([root, listing, out, "-colour"])


def test_data_layer_reads_encoded_like_raw(imageset, tmp_path):
    root, listing, _, _ = imageset
    lines = Path(listing).read_text().splitlines()[:3]  # the lossless PNGs
    (tmp_path / "png.txt").write_text("\n".join(lines) + "\n")
    batches = {}
    for name, flags in (("raw", {}), ("encoded", {"encoded": True})):
        path = str(tmp_path / name)
        convert_imageset(root, str(tmp_path / "png.txt"), path, **flags)
        text = f'type: "Data" data_param {{ source: "{path}" batch_size: 3 backend: LMDB }}'
        layer, _, top = build_layer(text, [], num_top=2, dtype=np.float32)
        try:
            layer.forward([], top)
            batches[name] = top[0].data.copy(), top[1].data.copy()
        finally:
            layer.close()
    np.testing.assert_array_equal(batches["raw"][0], batches["encoded"][0])
    np.testing.assert_array_equal(batches["encoded"][1], [10, 11, 12])
