"""ImageData: list files, decoding (BGR / grey), resizing, transforms, order and errors."""

from __future__ import annotations

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.io import resize_image  # noqa: E402
from caffelite.proto import caffe_pb2  # noqa: E402
from caffelite.prototxt import parse_text  # noqa: E402
from caffelite.rng import set_random_seed  # noqa: E402
from caffelite.testing import build_layer  # noqa: E402


def rgb_image(value: int, height=4, width=5) -> np.ndarray:
    """An RGB image whose pixels encode ``value`` (R), the position (G) and a ramp (B)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [np.full((height, width), value), rows * 10 + cols, 200 - rows - 3 * cols], axis=-1
    ).astype(np.uint8)


def write_images(folder, values, **shape):
    """PNG files img<value>.png and the RGB arrays written."""
    arrays = {}
    for value in values:
        arrays[value] = rgb_image(value, **shape)
        Image.fromarray(arrays[value]).save(folder / f"img{value}.png")
    return arrays


def write_list(tmp_path, lines, name="list.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def image_layer(source, params="", transform="", phase=caffe.TRAIN, batch_size=2):
    text = (
        f'type: "ImageData" top: "data" top: "label" {transform} '
        f'image_data_param {{ source: "{source}" batch_size: {batch_size} {params} }}'
    )
    return build_layer(text, [], num_top=2, phase=phase, dtype=np.float32)


def run(layer, bottom, top):
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return top[0].data.copy(), top[1].data.copy()


def bgr_chw(rgb: np.ndarray) -> np.ndarray:
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def test_colour_images_are_bgr_and_labels_follow(tmp_path):
    arrays = write_images(tmp_path, [7, 9, 11])
    source = write_list(tmp_path, [f"{tmp_path}/img{v}.png {v}" for v in (7, 9, 11)])
    layer, bottom, top = image_layer(source)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (2,)
    data, labels = run(layer, bottom, top)
    np.testing.assert_array_equal(labels, [7, 9])
    np.testing.assert_array_equal(data[0], bgr_chw(arrays[7]))
    np.testing.assert_array_equal(data[1], bgr_chw(arrays[9]))
    # wraps to the first line at the end of the list
    assert run(layer, bottom, top)[1].tolist() == [11, 7]
    assert run(layer, bottom, top)[1].tolist() == [9, 11]


def test_grey_images_root_folder_and_paths_with_spaces(tmp_path):
    folder = tmp_path / "my images"
    folder.mkdir()
    arrays = write_images(folder, [1, 2])
    (folder / "img1.png").rename(folder / "first image.png")
    source = write_list(tmp_path, ["first image.png 4", "img2.png  5"])
    for root in (str(folder), str(folder) + "/"):
        layer, bottom, top = image_layer(source, f'root_folder: "{root}" is_color: false')
        data, labels = run(layer, bottom, top)
        assert data.shape == (2, 1, 4, 5) and labels.tolist() == [4, 5]
        grey = np.asarray(Image.fromarray(arrays[2]).convert("L"), dtype=np.float32)
        np.testing.assert_array_equal(data[1, 0], grey)


def test_resize_to_new_height_and_width(tmp_path):
    arrays = write_images(tmp_path, [3], height=6, width=8)
    source = write_list(tmp_path, [f"{tmp_path}/img3.png 3"])
    layer, bottom, top = image_layer(source, "new_height: 3 new_width: 10", batch_size=1)
    data, _ = run(layer, bottom, top)
    assert data.shape == (1, 3, 3, 10)
    # OpenCV's INTER_LINEAR (cv::resize in Caffe's ReadImageToCVMat), rounded to uint8
    expected = np.rint(resize_image(arrays[3].astype(np.float64), (3, 10)))
    np.testing.assert_array_equal(data[0], bgr_chw(expected))


def test_transform_param_scale_mean_and_centre_crop(tmp_path):
    arrays = write_images(tmp_path, [20, 40])
    source = write_list(tmp_path, [f"{tmp_path}/img20.png 0", f"{tmp_path}/img40.png 1"])
    transform = (
        "transform_param { scale: 0.5 crop_size: 3 mean_value: 1 mean_value: 2 mean_value: 3 }"
    )
    layer, bottom, top = image_layer(source, transform=transform, phase=caffe.TEST)
    data, _ = run(layer, bottom, top)
    assert data.shape == (2, 3, 3, 3)
    for i, value in enumerate((20, 40)):
        image = bgr_chw(arrays[value])
        h_off, w_off = (4 - 3) // 2, (5 - 3) // 2  # centred in TEST
        crop = image[:, h_off : h_off + 3, w_off : w_off + 3]
        expected = (crop - np.array([1, 2, 3], np.float32)[:, None, None]) * 0.5
        np.testing.assert_allclose(data[i], expected, rtol=1e-6)


def test_mirror_flips_some_images_left_right(tmp_path):
    arrays = write_images(tmp_path, list(range(8)))
    source = write_list(tmp_path, [f"{tmp_path}/img{v}.png {v}" for v in range(8)])
    set_random_seed(3)
    layer, bottom, top = image_layer(
        source, transform="transform_param { mirror: true }", batch_size=8
    )
    data, labels = run(layer, bottom, top)
    flipped = []
    for image, label in zip(data, labels, strict=True):
        plain = bgr_chw(arrays[int(label)])
        if np.array_equal(image, plain):
            flipped.append(False)
        else:
            np.testing.assert_array_equal(image, plain[:, :, ::-1])
            flipped.append(True)
    assert any(flipped) and not all(flipped)


def test_shuffle_permutes_each_pass(tmp_path):
    write_images(tmp_path, range(6))
    source = write_list(tmp_path, [f"{tmp_path}/img{v}.png {v}" for v in range(6)])
    set_random_seed(5)
    layer, bottom, top = image_layer(source, "shuffle: true", batch_size=3)
    passes = []
    for _ in range(4):
        first, second = run(layer, bottom, top), run(layer, bottom, top)
        for data, labels in (first, second):  # each image still carries its own label
            np.testing.assert_array_equal(data[:, 2, 0, 0], labels)  # R -> channel 2 (BGR)
        order = first[1].tolist() + second[1].tolist()
        assert sorted(order) == list(range(6))
        passes.append(tuple(order))
    assert len(set(passes)) > 1 and any(p != tuple(range(6)) for p in passes)


def test_rand_skip_starts_at_a_random_line(tmp_path):
    write_images(tmp_path, range(5))
    source = write_list(tmp_path, [f"{tmp_path}/img{v}.png {v}" for v in range(5)])
    starts = set()
    for seed in range(12):
        set_random_seed(seed)
        layer, bottom, top = image_layer(source, "rand_skip: 4", batch_size=1)
        starts.add(int(run(layer, bottom, top)[1][0]))
    assert starts <= {0, 1, 2, 3} and len(starts) > 1


def test_in_a_net_from_prototxt(tmp_path):
    arrays = write_images(tmp_path, [5, 6])
    source = write_list(tmp_path, ["img5.png 0", "img6.png 1"])
    text = f"""
        layer {{ name: "in" type: "ImageData" top: "data" top: "label"
                 image_data_param {{ source: "{source}" root_folder: "{tmp_path}/"
                                     batch_size: 2 }}
                 transform_param {{ scale: 0.00390625 }} }}
        layer {{ name: "flat" type: "Flatten" bottom: "data" top: "flat" }}
    """
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    out = net.forward()
    np.testing.assert_allclose(out["flat"][1], bgr_chw(arrays[6]).ravel() / 256, rtol=1e-6)
    np.testing.assert_array_equal(out["label"], [0, 1])


def test_errors_name_the_path_or_line(tmp_path):
    write_images(tmp_path, [1])
    write_images(tmp_path, [2], height=6)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    good = f"{tmp_path}/img1.png 1"
    with pytest.raises(CaffeliteError, match="cannot open image list"):
        image_layer(str(tmp_path / "none.txt"))
    with pytest.raises(CaffeliteError, match="lists no images"):
        image_layer(write_list(tmp_path, [""], name="empty.txt"))
    with pytest.raises(
        CaffeliteError, match=r"bad\.txt:2: expected '<image path> <integer label>'"
    ):
        image_layer(write_list(tmp_path, [good, "img1.png one"], name="bad.txt"))
    with pytest.raises(CaffeliteError, match=r"image '.*missing\.png' does not exist"):
        image_layer(write_list(tmp_path, [f"{tmp_path}/missing.png 0"], name="m.txt"))
    with pytest.raises(CaffeliteError, match=r"cannot decode image '.*broken\.png'"):
        image_layer(write_list(tmp_path, [f"{tmp_path}/broken.png 0"], name="b.txt"))
    with pytest.raises(CaffeliteError, match="set new_height and new_width together"):
        image_layer(write_list(tmp_path, [good], name="g.txt"), "new_height: 3")
    with pytest.raises(CaffeliteError, match="batch_size must be positive"):
        image_layer(write_list(tmp_path, [good], name="g.txt"), batch_size=0)
    with pytest.raises(CaffeliteError, match="crop_size 9 is larger"):
        image_layer(
            write_list(tmp_path, [good], name="g.txt"), transform="transform_param { crop_size: 9 }"
        )
    layer, bottom, top = image_layer(
        write_list(tmp_path, [good, f"{tmp_path}/img2.png 2"], name="mixed.txt")
    )
    with pytest.raises(CaffeliteError, match=r"img2\.png' has shape \(3, 6, 5\).*\(3, 4, 5\)"):
        layer.forward(bottom, top)


def test_images_of_mixed_sizes_share_a_batch_when_cropped(tmp_path):
    """Caffe transforms each image on its own, so crop_size makes mixed sizes fine."""
    sizes = {1: (4, 5), 2: (6, 6), 3: (5, 7)}
    arrays = {}
    for value, (height, width) in sizes.items():
        arrays[value] = rgb_image(value, height, width)
        Image.fromarray(arrays[value]).save(tmp_path / f"img{value}.png")
    source = write_list(tmp_path, [f"{tmp_path}/img{v}.png {v}" for v in sizes])
    layer, bottom, top = image_layer(
        source, transform="transform_param { crop_size: 3 }", phase=caffe.TEST, batch_size=3
    )
    data, labels = run(layer, bottom, top)
    assert data.shape == (3, 3, 3, 3) and labels.tolist() == [1, 2, 3]
    for k, value in enumerate(sizes):
        height, width = sizes[value]
        top_row, left = (height - 3) // 2, (width - 3) // 2  # TEST: centre crop
        crop = arrays[value][top_row : top_row + 3, left : left + 3]
        np.testing.assert_array_equal(data[k], bgr_chw(crop))
    uncropped, bottom, top = image_layer(source, batch_size=3)
    with pytest.raises(CaffeliteError, match="set new_height/new_width or crop_size"):
        run(uncropped, bottom, top)


def test_16_bit_images_are_scaled_to_8_bits_as_opencv_does(tmp_path):
    ramp = (np.arange(32, dtype=np.uint16) * 2000).reshape(4, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    source = write_list(tmp_path, [f"{tmp_path}/deep.png 0"])
    layer, bottom, top = image_layer(source, params="is_color: false", batch_size=1)
    data, _ = run(layer, bottom, top)
    np.testing.assert_array_equal(data[0, 0], (ramp >> 8).astype(np.float32))
