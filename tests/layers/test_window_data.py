"""WindowData: the window file, fg/bg sampling, warp and square crops with context, mirror,
mean subtraction and the errors, on PNG files the tests write."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from caffelite import rng  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.io import array_to_blobproto  # noqa: E402
from caffelite.layers.window_data import Warp, Window, warp_geometry  # noqa: E402
from caffelite.testing import build_layer  # noqa: E402

ROWS, COLS = 10, 12


def linear_bgr(rows=ROWS, cols=COLS) -> np.ndarray:
    """(3, H, W) BGR pixels linear in the position, so bilinear warps are exact away
    from the border: channel k holds 10 + 3 r + 2 c + 40 k."""
    r, c = np.mgrid[0:rows, 0:cols]
    return np.stack([10 + 3 * r + 2 * c + 40 * k for k in range(3)]).astype(np.uint8)


def write_png(path, bgr: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(bgr[::-1].transpose(1, 2, 0))).save(path)


def window_file(tmp_path, records, name="windows.txt") -> str:
    """records: [(path, [(label, overlap, x1, y1, x2, y2), ...]), ...] in Caffe's format."""
    lines = []
    for index, (path, windows) in enumerate(records):
        lines += [f"# {index}", path, "3", str(ROWS), str(COLS), str(len(windows))]
        lines += [" ".join(str(v) for v in window) for window in windows]
    target = tmp_path / name
    target.write_text("\n".join(lines) + "\n")
    return str(target)


def layer_text(source, crop=6, batch=1, window="", transform=""):
    return (
        f'type: "WindowData" window_data_param {{ source: "{source}" batch_size: {batch} '
        f"{window} }}"
        f" transform_param {{ crop_size: {crop} {transform} }}"
    )


def build(text):
    return build_layer(text, [], num_top=2, dtype=np.float32)


@pytest.fixture
def image(tmp_path):
    pixels = linear_bgr()
    write_png(tmp_path / "a.png", pixels)
    return pixels


# ---- the window file ---------------------------------------------------------------------
def test_records_are_parsed_and_split_by_overlap(tmp_path, image):
    write_png(tmp_path / "b.png", image)
    source = window_file(
        tmp_path,
        [
            ("a.png", [(3, 0.9, 1, 2, 5, 6), (2, 0.5, 0, 0, 3, 3), (4, 0.1, 2, 2, 8, 9)]),
            ("b.png", [(1, 0.7, 0, 1, 4, 5)]),
        ],
    )
    window = f'fg_threshold: 0.7 bg_threshold: 0.3 root_folder: "{tmp_path}/"'
    layer, _, top = build(layer_text(source, window=window))
    assert [(im.path, im.channels, im.height, im.width) for im in layer.images] == [
        (f"{tmp_path}/a.png", 3, ROWS, COLS),
        (f"{tmp_path}/b.png", 3, ROWS, COLS),
    ]
    # overlap 0.5 lies between the thresholds: dropped; the background keeps label 0
    assert layer.fg == [Window(0, 3, 0.9, (1, 2, 5, 6), 7), Window(1, 1, 0.7, (0, 1, 4, 5), 16)]
    assert layer.bg == [Window(0, 0, 0.0, (2, 2, 8, 9), 9)]
    assert top[0].shape == (1, 3, 6, 6) and top[1].shape == (1,)


def test_foreground_and_background_fractions(tmp_path, image):
    # batch 20, fg_fraction 0.25: 15 background windows first, then 5 foreground ones,
    # each drawn uniformly from its set (two foreground windows, labels 1 and 2).
    source = window_file(
        tmp_path, [("a.png", [(1, 0.9, 0, 0, 5, 5), (2, 0.8, 1, 1, 6, 6), (5, 0.1, 2, 2, 7, 7)])]
    )
    rng.set_random_seed(3)
    text = layer_text(source, batch=20, window=f'root_folder: "{tmp_path}/"')
    layer, bottom, top = build(text)
    assert layer.num_fg == 5
    counts = np.zeros(3)
    batches = 200
    for _ in range(batches):
        layer.forward(bottom, top)
        labels = top[1].data
        assert np.all(labels[:15] == 0) and np.all(np.isin(labels[15:], [1, 2]))
        counts += np.bincount(labels[15:].astype(int), minlength=3)
    draws = 5 * batches  # label 1 ~ Binomial(1000, 1/2): 5 standard deviations
    assert abs(counts[1] - draws / 2) < 5 * np.sqrt(draws / 4), counts


# ---- geometry, by hand ---------------------------------------------------------------------
def test_warp_without_context_takes_the_box():
    assert warp_geometry((2, 3, 7, 8), (ROWS, COLS), 6, 0, False, False) == Warp(
        (2, 3, 7, 8), (6, 6), (0, 0)
    )


def test_context_pad_grows_the_box():
    # 6x6 box at (4, 2), crop 8, context 1: scale 8/6, half 3 -> 4, centre (7, 5):
    # x 3..11, y 1..9 (9x9, inside the 10x12 image), warped to round(9 * 8/9) = 8.
    assert warp_geometry((4, 2, 9, 7), (ROWS, COLS), 8, 1, False, False) == Warp(
        (3, 1, 11, 9), (8, 8), (0, 0)
    )


def test_context_past_the_corner_is_clipped_and_padded():
    # 6x6 box at (0, 0): grown to -1..7 both ways (9 wide), clipped to 0..7 (8 wide);
    # scale 8/9: the 8 pixels warp to round(64/9) = 7, after round(8/9) = 1 of padding.
    assert warp_geometry((0, 0, 5, 5), (ROWS, COLS), 8, 1, False, False) == Warp(
        (0, 0, 7, 7), (7, 7), (1, 1)
    )
    # mirrored, the left padding is the right one's (none)
    assert warp_geometry((0, 0, 5, 5), (ROWS, COLS), 8, 1, False, True) == Warp(
        (0, 0, 7, 7), (7, 7), (1, 0)
    )


def test_square_mode_takes_the_longer_side():
    # 4 wide, 8 tall at (2, 1): half 4 both ways around (4, 5): x 0..8, y 1..9 (9x9).
    assert warp_geometry((2, 1, 5, 8), (ROWS, COLS), 8, 0, True, False) == Warp(
        (0, 1, 8, 9), (8, 8), (0, 0)
    )


def test_rounding_is_half_away_from_zero():
    # A 1x1 box at (0, 0), crop 4, context 1 (scale 2): centre 0.5, half 0.5 -> 1, so
    # x1 = round(-0.5) = -1 (C's round; Python's would give 0) and x2 = round(1.5) = 2:
    # 4 wide, clipped to 0..2, warped at scale 1 to 3 pixels after 1 of padding.
    warp = warp_geometry((0, 0, 0, 0), (ROWS, COLS), 4, 1, False, False)
    assert warp == Warp((0, 0, 2, 2), (3, 3), (1, 1))


# ---- pixels -------------------------------------------------------------------------------
def source_coordinates(n_in, n_out):
    """Source coordinates of OpenCV's INTER_LINEAR along one axis (edges clamped)."""
    return np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)


def test_warp_crop_pixels(tmp_path, image):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 2, 3, 7, 8)])])
    layer, bottom, top = build(layer_text(source, window=f'root_folder: "{tmp_path}/"'))
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0], image[:, 3:9, 2:8])
    assert top[1].data[0] == 0


def test_context_crop_pixels_by_hand(tmp_path, image):
    # The corner case above: row 0 and column 0 stay 0; rows/cols 1..7 hold the 8x8
    # region (x, y in 0..7) warped to 7x7; the image is linear, so each warped pixel is
    # 10 + 3 y + 2 x + 40 k at OpenCV's source coordinates, rounded to uint8.
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 0, 0, 5, 5)])])
    window = f'root_folder: "{tmp_path}/" context_pad: 1'
    layer, bottom, top = build(layer_text(source, crop=8, window=window))
    layer.forward(bottom, top)
    data = top[0].data[0]
    assert np.all(data[:, 0, :] == 0) and np.all(data[:, :, 0] == 0)
    s = source_coordinates(8, 7)
    expected = np.stack([10 + 3 * s[:, None] + 2 * s[None, :] + 40 * k for k in range(3)])
    np.testing.assert_allclose(data[:, 1:, 1:], expected, atol=0.5 + 1e-6)  # uint8 rounding


def test_mirror_flips_the_warped_window(tmp_path, image):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 2, 3, 7, 8)])])
    text = layer_text(
        source,
        batch=16,
        window=f'root_folder: "{tmp_path}/" fg_fraction: 0',
        transform="mirror: true",
    )
    rng.set_random_seed(5)
    layer, bottom, top = build(text)
    layer.forward(bottom, top)
    crop = image[:, 3:9, 2:8].astype(np.float32)
    flipped = [np.array_equal(item, crop[:, :, ::-1]) for item in top[0].data]
    plain = [np.array_equal(item, crop) for item in top[0].data]
    assert all(f != p for f, p in zip(flipped, plain, strict=True))
    assert any(flipped) and any(plain)


def test_mean_values_and_scale(tmp_path, image):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 2, 3, 7, 8)])])
    text = layer_text(
        source,
        window=f'root_folder: "{tmp_path}/" scale: 0.5',
        transform="mean_value: 10 mean_value: 20 mean_value: 30",
    )
    layer, bottom, top = build(text)
    layer.forward(bottom, top)
    crop = image[:, 3:9, 2:8].astype(np.float32)
    expected = (crop - np.array([10, 20, 30], np.float32)[:, None, None]) * 0.5
    np.testing.assert_array_equal(top[0].data[0], expected)


def test_mean_file_centre_crop(tmp_path, image):
    # A 10x10 mean for crop 6: Caffe subtracts its centre crop, offset (10 - 6) // 2 = 2.
    mean = np.random.default_rng(0).uniform(0, 50, (1, 3, 10, 10)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 2, 3, 7, 8)])])
    transform = f'mean_file: "{tmp_path}/mean.binaryproto"'
    layer, bottom, top = build(
        layer_text(source, window=f'root_folder: "{tmp_path}/"', transform=transform)
    )
    layer.forward(bottom, top)
    expected = image[:, 3:9, 2:8].astype(np.float32) - mean[0, :, 2:8, 2:8]
    np.testing.assert_array_equal(top[0].data[0], expected)


def test_cache_images_reads_once(tmp_path, image):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 2, 3, 7, 8)])])
    window = f'root_folder: "{tmp_path}/" cache_images: true'
    layer, bottom, top = build(layer_text(source, window=window))
    (tmp_path / "a.png").unlink()  # the cached bytes are decoded
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0], image[:, 3:9, 2:8])


# ---- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "is empty"),
        ("# 0\na.png\n3\n10\nx\n", r"line 5: expected the image width, got 'x'"),
        ("# 1\na.png\n", r"line 1: image index 1, expected 0"),
        ("% 0\n", r"line 1: expected '#' starting an image record, got '%'"),
        ("# 0\na.png\n3\n10\n12\n1\n0 0.1 1 2 3\n", r"line 7: ends before a window's y2"),
        ("# 0\na.png\n1\n10\n12\n0\n", r"line 3: image 0 has 1 channels"),
        ("# 0\na.png\n3\n10\n12\n1\n0 0.9 1 1 4 4\n", r"line 7: a foreground window .* got 0"),
        ("# 0\na.png\n3\n10\n12\n1\n1 0.9 1 1 4 4\n", r"has none"),  # no background
    ],
)
def test_malformed_window_file(tmp_path, text, pattern):
    source = tmp_path / "bad.txt"
    source.write_text(text)
    with pytest.raises(CaffeliteError, match=rf"layer 'windowdata'.*{source}.*{pattern}"):
        build(layer_text(source))


def test_missing_window_file(tmp_path):
    with pytest.raises(CaffeliteError, match=r"cannot open window file .*nothing.txt"):
        build(layer_text(tmp_path / "nothing.txt"))


def test_missing_image_is_named(tmp_path):
    source = window_file(tmp_path, [("gone.png", [(0, 0.0, 0, 0, 3, 3)])])
    layer, bottom, top = build(layer_text(source, window=f'root_folder: "{tmp_path}/"'))
    with pytest.raises(
        CaffeliteError, match=r"layer 'windowdata'.*image '.*gone.png' does not exist"
    ):
        layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match=r"gone.png' does not exist"):
        build(layer_text(source, window=f'root_folder: "{tmp_path}/" cache_images: true'))


def test_window_outside_the_image_is_named(tmp_path, image):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 5, 5, 12, 9)])])
    layer, bottom, top = build(layer_text(source, window=f'root_folder: "{tmp_path}/"'))
    with pytest.raises(
        CaffeliteError, match=r"window \(5, 5, 12, 9\) of .*a.png.*line 7.* outside the 12x10"
    ):
        layer.forward(bottom, top)


@pytest.mark.parametrize(
    "window, transform, pattern",
    [
        ("crop_mode: 'tile'", "", "crop_mode must be 'warp' or 'square'"),
        ("context_pad: 3", "", "context_pad 3 leaves nothing"),
        ("crop_size: 5", "", "crop_size is set differently"),
        ("", "mean_value: 1 mean_value: 2", "give 1 mean_value or 3"),
    ],
)
def test_bad_parameters(tmp_path, image, window, transform, pattern):
    source = window_file(tmp_path, [("a.png", [(0, 0.0, 0, 0, 3, 3)])])
    with pytest.raises(CaffeliteError, match=pattern):
        build(layer_text(source, window=window, transform=transform))


def test_in_a_net(tmp_path, image):
    import caffelite as caffe
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import parse_text

    source = window_file(tmp_path, [("a.png", [(1, 0.9, 1, 1, 8, 8), (0, 0.1, 2, 3, 7, 8)])])
    text = f"""
    layer {{ name: "data" type: "WindowData" top: "data" top: "label"
             window_data_param {{ source: "{source}" batch_size: 4 root_folder: "{tmp_path}/"
                                  context_pad: 1 crop_mode: "square" }}
             transform_param {{ crop_size: 6 mirror: true mean_value: 100 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
             inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    net.forward()
    net.backward()
    assert net.blobs["data"].data.shape == (4, 3, 6, 6)
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 0, 0, 1])
    assert np.isfinite(net.blobs["loss"].data).all()
