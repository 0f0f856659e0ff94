"""caffelite.io preprocessing: pycaffe's Transformer, load_image, resize_image, oversample."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import io as cio
from caffelite.errors import CaffeliteError

# ---- Transformer --------------------------------------------------------------------


def _imagenet_style(shape=(1, 3, 4, 5), mean=(100.0, 110.0, 120.0)):
    t = cio.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array(mean))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_exact_values_by_hand():
    # (H, W, K) = (2, 2, 3), RGB; each value is exact in float32 after every step.
    img = np.array(
        [
            [[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]],
            [[1.0, 0.0, 0.5], [0.5, 0.25, 0.0]],
        ],
        dtype=np.float32,
    )
    t = _imagenet_style(shape=(1, 3, 2, 2))
    out = t.preprocess("data", img)
    # out[c] = (255 * img[..., (2, 1, 0)[c]] - mean[c]) * 0.5, worked out by hand:
    # B: 255*B = [[255, 31.875], [127.5, 0]] - 100 -> [[155, -68.125], [27.5, -100]]
    # G: 255*G = [[127.5, 191.25], [0, 63.75]] - 110 -> [[17.5, 81.25], [-110, -46.25]]
    # R: 255*R = [[0, 63.75], [255, 127.5]] - 120 -> [[-120, -56.25], [135, 7.5]]
    expected = np.array(
        [
            [[77.5, -34.0625], [13.75, -50.0]],
            [[8.75, 40.625], [-55.0, -23.125]],
            [[-60.0, -28.125], [67.5, 3.75]],
        ],
        dtype=np.float32,
    )
    assert out.dtype == np.float32 and out.shape == (3, 2, 2)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_then_deprocess_round_trip():
    rng = np.random.default_rng(0)
    img = rng.random((4, 5, 3)).astype(np.float32)
    t = _imagenet_style()
    blob = t.preprocess("data", img)
    assert blob.shape == (3, 4, 5)
    back = t.deprocess("data", blob)
    assert back.shape == (4, 5, 3)
    np.testing.assert_allclose(back, img, rtol=0, atol=1e-6)
    # Straight from a (1, C, H, W) blob as well.
    np.testing.assert_allclose(t.deprocess("data", blob[np.newaxis]), img, rtol=0, atol=1e-6)


def test_deprocess_inverts_orders_that_are_not_their_own_inverse():
    # A 3-cycle channel swap: re-applying it (pycaffe) would not give the image back.
    rng = np.random.default_rng(1)
    img = rng.random((3, 4, 3))
    t = cio.Transformer({"data": (1, 3, 3, 4)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (1, 2, 0))
    t.set_mean("data", rng.random((3, 3, 4)))
    blob = t.preprocess("data", img)
    # blob channel 0 is image channel 1 (the swap picks channels 1, 2, 0), minus its mean
    expected0 = img[:, :, 1].astype(np.float32) - t.mean["data"][0]
    np.testing.assert_allclose(blob[0], expected0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t.deprocess("data", blob), img, rtol=0, atol=1e-6)


def test_preprocess_leaves_the_callers_array_alone():
    img = np.full((2, 3, 1), 0.5, dtype=np.float32)
    t = cio.Transformer({"data": (1, 1, 2, 3)})
    t.set_transpose("data", (2, 0, 1))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([1.0]))
    out = t.preprocess("data", img)
    np.testing.assert_array_equal(out, np.full((1, 2, 3), 126.5, dtype=np.float32))
    np.testing.assert_array_equal(img, np.full((2, 3, 1), 0.5, dtype=np.float32))


def test_preprocess_resizes_to_the_input_size_and_subtracts_full_mean():
    t = cio.Transformer({"data": (1, 2, 4, 6)})
    t.set_transpose("data", (2, 0, 1))
    mean = np.arange(48, dtype=np.float64).reshape(2, 4, 6)
    t.set_mean("data", mean)
    img = np.full((2, 3, 2), 7.0)
    out = t.preprocess("data", img)
    assert out.shape == (2, 4, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out, (7.0 - mean).astype(np.float32))


def test_unconfigured_transformer_only_converts_to_float32():
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = cio.Transformer({"data": (5, 3, 2, 4)}).preprocess("data", img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_mean_shape_errors():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(CaffeliteError, match=r"has 2 values, the input has 3 channels"):
        t.set_mean("data", np.array([1.0, 2.0]))
    with pytest.raises(CaffeliteError, match=r"mean of shape \(3, 8, 8\) does not match"):
        t.set_mean("data", np.zeros((3, 8, 8)))
    with pytest.raises(CaffeliteError, match=r"expected \(3,\) or \(3, 4, 5\)"):
        t.set_mean("data", np.zeros((4, 5)))  # 2-D means are single-channel
    with pytest.raises(CaffeliteError, match=r"must have shape \(C,\) or \(C, H, W\)"):
        t.set_mean("data", np.zeros((1, 3, 4, 5)))


def test_mean_that_does_not_fit_the_untransposed_image():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    t.set_mean("data", np.zeros((3, 4, 5)))
    with pytest.raises(CaffeliteError, match=r"is set_transpose missing"):
        t.preprocess("data", np.zeros((4, 5, 3)))


def test_unknown_input_name():
    t = cio.Transformer({"data": (1, 3, 4, 5), "label": (1, 1, 1, 1)})
    with pytest.raises(CaffeliteError, match=r"'image' is not one of the net inputs: 'data', "):
        t.preprocess("image", np.zeros((4, 5, 3)))
    for setter, arg in [
        (t.set_transpose, (2, 0, 1)),
        (t.set_channel_swap, (2, 1, 0)),
        (t.set_raw_scale, 255),
        (t.set_mean, np.zeros(3)),
        (t.set_input_scale, 2.0),
    ]:
        with pytest.raises(CaffeliteError, match=r"'image' is not one of the net inputs"):
            setter("image", arg)
    with pytest.raises(CaffeliteError, match=r"'image' is not one of the net inputs"):
        t.deprocess("image", np.zeros((3, 4, 5)))


def test_order_errors():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(CaffeliteError, match=r"permutation of the 3 axes"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(CaffeliteError, match=r"one entry per input channel \(3"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(CaffeliteError, match=r"permutation of 0..2"):
        t.set_channel_swap("data", (0, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    with pytest.raises(CaffeliteError, match=r"needs the channels first"):
        t.preprocess("data", np.zeros((4, 5, 3)))
    with pytest.raises(CaffeliteError, match=r"one image of shape \(H, W, K\)"):
        t.preprocess("data", np.zeros((4, 5)))


# ---- load_image ---------------------------------------------------------------------


@pytest.fixture
def pil_image():
    return pytest.importorskip("PIL.Image")


def test_load_image_colour(tmp_path, pil_image):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13
    path = tmp_path / "rgb.png"
    pil_image.fromarray(rgb, "RGB").save(path)
    img = cio.load_image(str(path))
    assert img.dtype == np.float32 and img.shape == (2, 3, 3)
    np.testing.assert_allclose(img, rgb / 255.0, rtol=1e-6)
    # color=False gives grey (pycaffe reads with as_grey): ITU-R 601 luma, one channel.
    grey = cio.load_image(path, color=False)
    assert grey.shape == (2, 3, 1)
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    luma = (r * 299 + g * 587 + b * 114) / 1000 / 255.0
    np.testing.assert_allclose(grey[..., 0], luma, atol=1 / 255)


def test_load_image_grey(tmp_path, pil_image):
    grey = np.array([[0, 51, 255], [102, 153, 204]], dtype=np.uint8)
    path = tmp_path / "grey.png"
    pil_image.fromarray(grey, "L").save(path)
    colour = cio.load_image(path)
    assert colour.shape == (2, 3, 3) and colour.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(colour[:, :, c], grey / 255.0, rtol=1e-6)
    single = cio.load_image(path, color=False)
    assert single.shape == (2, 3, 1) and single.dtype == np.float32
    np.testing.assert_allclose(single[:, :, 0], grey / 255.0, rtol=1e-6)


def test_load_image_drops_alpha_and_scales_16_bit(tmp_path, pil_image):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    pil_image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = cio.load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(img, np.stack([np.ones((2, 2)), *[np.zeros((2, 2))] * 2], -1))

    deep = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    pil_image.fromarray(deep).save(tmp_path / "deep.png")
    img = cio.load_image(tmp_path / "deep.png", color=False)
    np.testing.assert_allclose(img[:, :, 0], deep / 65535.0, rtol=1e-6)


def test_load_image_missing_or_unreadable(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(CaffeliteError, match=r"nope\.png.*does not exist"):
        cio.load_image(str(missing))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    pytest.importorskip("PIL")
    with pytest.raises(CaffeliteError, match=r"cannot read .*junk\.jpg.* as an image"):
        cio.load_image(junk)


# ---- resize_image -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_resize_constant_image_stays_constant(channels):
    im = np.full((3, 7, channels), 0.3, dtype=np.float32)
    out = cio.resize_image(im, (5, 2))
    assert out.shape == (5, 2, channels) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.full((5, 2, channels), 0.3, dtype=np.float32))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("order", [0, 1])
def test_resize_shapes_and_range(channels, order):
    rng = np.random.default_rng(channels)
    im = rng.uniform(-3.0, 40.0, size=(6, 9, channels))
    for dims in [(6, 9), (13, 4), (2, 20), (1, 1)]:
        out = cio.resize_image(im, dims, interp_order=order)
        assert out.shape == (*dims, channels) and out.dtype == np.float32
        assert out.min() >= np.float32(im.min()) and out.max() <= np.float32(im.max())


def test_resize_bilinear_2x2_to_4x4_by_hand():
    # Half-pixel centres (skimage's resize): output i samples input (i + 0.5) * 2 / 4 - 0.5
    # = -0.25, 0.25, 0.75, 1.25; beyond the border the edge pixel is used (skimage's
    # mode="edge", Pillow's and OpenCV's upsampling), so the corners are kept.
    # Along one axis [a, b] -> [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
    im = np.array([[0.0, 1.0], [2.0, 3.0]])[:, :, np.newaxis]
    expected = np.array(
        [
            [0.0, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],
            [1.5, 1.75, 2.25, 2.5],
            [2.0, 2.25, 2.75, 3.0],
        ]
    )
    out = cio.resize_image(im, (4, 4))
    np.testing.assert_allclose(out[:, :, 0], expected, rtol=0, atol=1e-7)


def test_resize_bilinear_against_a_plain_loop():
    def reference(im, new_h, new_w):
        h, w = im.shape[:2]
        out = np.zeros((new_h, new_w, im.shape[2]))
        for i in range(new_h):
            y = min(max((i + 0.5) * h / new_h - 0.5, 0.0), h - 1)
            y0 = int(np.floor(y))
            y1, fy = min(y0 + 1, h - 1), y - y0
            for j in range(new_w):
                x = min(max((j + 0.5) * w / new_w - 0.5, 0.0), w - 1)
                x0 = int(np.floor(x))
                x1, fx = min(x0 + 1, w - 1), x - x0
                top = im[y0, x0] * (1 - fx) + im[y0, x1] * fx
                bottom = im[y1, x0] * (1 - fx) + im[y1, x1] * fx
                out[i, j] = top * (1 - fy) + bottom * fy
        return out

    rng = np.random.default_rng(3)
    im = rng.random((5, 7, 2))
    for dims in [(9, 4), (3, 11), (5, 7)]:
        np.testing.assert_allclose(cio.resize_image(im, dims), reference(im, *dims), atol=1e-6)


def test_resize_nearest_by_hand():
    im = np.array([[1.0, 2.0], [3.0, 4.0]])[:, :, np.newaxis]
    out = cio.resize_image(im, (4, 4), interp_order=0)
    np.testing.assert_array_equal(out[:, :, 0], np.kron([[1, 2], [3, 4]], np.ones((2, 2))))
    # 3 -> 2: centres at input 0.75 and 2.25 fall in pixels 0 and 2.
    row = np.array([[10.0, 20.0, 30.0]])[:, :, np.newaxis]
    np.testing.assert_array_equal(cio.resize_image(row, (1, 2), interp_order=0)[0, :, 0], [10, 30])


def test_resize_errors():
    with pytest.raises(CaffeliteError, match=r"interp_order 0 \(nearest\) or 1"):
        cio.resize_image(np.zeros((2, 2, 1)), (3, 3), interp_order=3)
    with pytest.raises(CaffeliteError, match=r"cannot resize an image of shape \(2, 2, 1\)"):
        cio.resize_image(np.zeros((2, 2, 1)), (0, 3))
    with pytest.raises(CaffeliteError, match=r"new_dims must be \(height, width\)"):
        cio.resize_image(np.zeros((2, 2, 1)), (3, 3, 3))


# ---- oversample ---------------------------------------------------------------------


def test_oversample_ten_crops():
    rng = np.random.default_rng(4)
    images = [rng.random((6, 8, 2)), rng.random((6, 8, 2))]
    crops = cio.oversample(images, (4, 5))
    assert crops.shape == (20, 4, 5, 2) and crops.dtype == np.float32
    for n, im in enumerate(images):
        im = im.astype(np.float32)
        c = crops[10 * n : 10 * n + 10]
        np.testing.assert_array_equal(c[0], im[:4, :5])  # top-left
        np.testing.assert_array_equal(c[1], im[:4, 3:])  # top-right
        np.testing.assert_array_equal(c[2], im[2:, :5])  # bottom-left
        np.testing.assert_array_equal(c[3], im[2:, 3:])  # bottom-right
        # centre (3, 4) - (2, 2.5) = (1, 1.5), rounded down to (1, 1)
        np.testing.assert_array_equal(c[4], im[1:5, 1:6])
        for k in range(5):
            np.testing.assert_array_equal(c[5 + k], c[k][:, ::-1])
    np.testing.assert_array_equal(crops[5], images[0][:4, :5][:, ::-1].astype(np.float32))


def test_oversample_errors():
    with pytest.raises(CaffeliteError, match=r"crop \(7, 5\) does not fit the images of size"):
        cio.oversample([np.zeros((6, 8, 3))], (7, 5))
    with pytest.raises(CaffeliteError, match=r"images of one shape"):
        cio.oversample([np.zeros((6, 8, 3)), np.zeros((6, 9, 3))], (4, 4))
