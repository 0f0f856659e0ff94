"""image_codec: OpenCV's decode modes (colour, grey, unchanged) and channel order, with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.image_codec import decode_image, encode_image, read_image  # noqa: E402
from caffelite.io import resize_image  # noqa: E402


def rgb_pixels(height=6, width=7) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 30, cols * 20, 255 - rows * cols], axis=-1).astype(np.uint8)


def encoded(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_png_colour_decodes_to_bgr_chw_in_every_colour_mode():
    rgb = rgb_pixels()
    data = encoded(Image.fromarray(rgb))
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)
    for color in (None, True):  # unchanged keeps the 3 channels; colour gives them too
        np.testing.assert_array_equal(decode_image(data, color), bgr)
    grey = decode_image(data, False)
    assert grey.shape == (1, 6, 7)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601, as cv::cvtColor
    np.testing.assert_array_equal(grey[0], luma)


def test_grey_png_native_has_one_channel_and_colour_replicates_it():
    grey = rgb_pixels()[:, :, 0]
    data = encoded(Image.fromarray(grey))
    np.testing.assert_array_equal(decode_image(data), grey[None])
    np.testing.assert_array_equal(decode_image(data, True), np.repeat(grey[None], 3, axis=0))


def test_alpha_is_kept_only_unchanged_as_bgra():
    rgba = np.dstack([rgb_pixels(), np.full((6, 7), 77, np.uint8)])
    data = encoded(Image.fromarray(rgba))
    native = decode_image(data)
    assert native.shape == (4, 6, 7)
    np.testing.assert_array_equal(native, rgba[:, :, [2, 1, 0, 3]].transpose(2, 0, 1))
    np.testing.assert_array_equal(decode_image(data, True), native[:3])
    # OpenCV expands grey+alpha to BGRA as well
    la = Image.fromarray(rgba[:, :, 0]).convert("L")
    la.putalpha(9)
    native = decode_image(encoded(la))
    assert native.shape == (4, 6, 7)
    np.testing.assert_array_equal(native[:3], np.repeat(rgba[None, :, :, 0], 3, axis=0))


def test_jpeg_decodes_close_to_its_source_in_bgr():
    rgb = np.kron(rgb_pixels(8, 8), np.ones((8, 8, 1), np.uint8))  # smooth 64 x 64
    data = encoded(Image.fromarray(rgb), "JPEG", quality=95)
    bgr = decode_image(data, None).astype(int)
    assert bgr.shape == (3, 64, 64)
    assert np.abs(bgr - rgb[:, :, ::-1].transpose(2, 0, 1)).mean() < 3
    grey = decode_image(data, False)
    assert grey.shape == (1, 64, 64)
    luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=int)
    assert np.abs(grey[0].astype(int) - luma).mean() < 3


def test_sixteen_bit_png_needs_a_forced_mode_and_is_divided_by_256():
    values = (np.arange(42, dtype=np.uint16).reshape(6, 7) * 1500).astype(np.uint16)
    data = encoded(Image.fromarray(values))
    with pytest.raises(CaffeliteError, match="16-bit or float.*force_color or force_gray"):
        decode_image(data, None, what="record b'7'")
    np.testing.assert_array_equal(decode_image(data, False)[0], values >> 8)


def test_corrupt_bytes_name_the_source():
    with pytest.raises(CaffeliteError, match=r"cannot decode record b'3' of db"):
        decode_image(b"\x89PNG not really", what="record b'3' of db")


@pytest.mark.parametrize("encoding", ["png", "jpg", "bmp"])
def test_encode_round_trips(encoding):
    bgr = np.kron(rgb_pixels(4, 4), np.ones((4, 4, 1), np.uint8))[:, :, ::-1].transpose(2, 0, 1)
    back = decode_image(encode_image(np.ascontiguousarray(bgr), encoding)).astype(int)
    tolerance = 3 if encoding == "jpg" else 0
    assert np.abs(back - bgr).mean() <= tolerance
    grey = np.ascontiguousarray(bgr[:1])
    np.testing.assert_array_equal(decode_image(encode_image(grey, "png")), grey)


def test_encode_errors():
    with pytest.raises(CaffeliteError, match="uint8 .1, 3 or 4, H, W. pixels"):
        encode_image(np.zeros((2, 3, 3), np.uint8), "png")
    with pytest.raises(CaffeliteError, match="cannot encode an image as 'nope'"):
        encode_image(np.zeros((3, 3, 3), np.uint8), "nope")


def test_read_image_resizes_with_opencv_linear(tmp_path):
    rgb = rgb_pixels()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = read_image(str(tmp_path / "a.png"), 4, 9)
    expected = np.rint(resize_image(rgb[:, :, ::-1].astype(np.float64), (4, 9)))
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))
    with pytest.raises(CaffeliteError, match="does not exist"):
        read_image(str(tmp_path / "missing.png"))
