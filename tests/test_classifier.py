"""caffe.Classifier and caffe.Detector, checked against crops and weights computed
here by hand: a linear deploy net whose scores are W . crop + b."""

import numpy as np
import pytest

import caffelite as caffe
from caffelite import io as cio

SIDE, CHANNELS, CLASSES = 4, 3, 5
DEPLOY = f"""
name: "linear"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: 10 dim: {CHANNELS} dim: {SIDE} dim: {SIDE} }} }} }}
layer {{ name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param {{ num_output: {CLASSES}
          weight_filler {{ type: "gaussian" std: 1 }}
          bias_filler {{ type: "gaussian" std: 1 }} }} }}
"""


@pytest.fixture
def model(tmp_path):
    """(prototxt, caffemodel, W, b) of the linear net, with random weights saved."""
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(DEPLOY)
    caffe.set_random_seed(5)
    net = caffe.Net(str(prototxt), caffe.TEST)
    weights = tmp_path / "deploy.caffemodel"
    net.save(str(weights))
    w, b = (blob.data.astype(np.float64) for blob in net.params["score"])
    return str(prototxt), str(weights), w, b


def scores(w, b, crop_hwk, mean=0.0, raw_scale=1.0, swap=(0, 1, 2)):
    """What the net computes for one (H, W, K) crop, preprocessed as pycaffe does."""
    chw = crop_hwk.transpose(2, 0, 1)[list(swap)] * raw_scale - mean
    return w @ chw.ravel() + b


def images(n, side, seed=0):
    return [np.random.default_rng(seed + i).random((side, side, CHANNELS)) for i in range(n)]


def test_oversampled_prediction_averages_the_ten_crops(model):
    prototxt, weights, w, b = model
    mean = np.array([0.1, 0.2, 0.3])
    clf = caffe.Classifier(
        prototxt, weights, image_dims=(6, 6), mean=mean, raw_scale=2.0, channel_swap=(2, 1, 0)
    )
    inputs = images(3, 6)
    got = clf.predict(inputs)
    assert got.shape == (3, CLASSES)
    corners = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]  # 4x4 crops of a 6x6 image
    for im, row in zip(inputs, got, strict=True):
        crops = [im[y : y + SIDE, x : x + SIDE] for y, x in corners]
        crops += [c[:, ::-1] for c in crops]
        want = np.mean(
            [scores(w, b, c, mean[:, None, None], 2.0, (2, 1, 0)) for c in crops], axis=0
        )
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-4)


def test_center_crop_prediction(model):
    prototxt, weights, w, b = model
    clf = caffe.Classifier(prototxt, weights, image_dims=(7, 7))
    inputs = images(12, 7)  # more images than one batch of 10
    got = clf.predict(inputs, oversample=False)
    assert got.shape == (12, CLASSES)
    for im, row in zip(inputs, got, strict=True):
        # centre 3.5 - 2 = 1.5, rounded down: rows and columns 1..4
        np.testing.assert_allclose(row, scores(w, b, im[1:5, 1:5]), rtol=1e-4, atol=1e-4)


def test_default_image_dims_resize_to_the_input(model):
    prototxt, weights, w, b = model
    clf = caffe.Classifier(prototxt, weights)
    assert tuple(clf.image_dims) == (SIDE, SIDE)
    (im,) = images(1, 9)
    got = clf.predict([im], oversample=False)
    want = scores(w, b, cio.resize_image(im, (SIDE, SIDE)).astype(np.float64))
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


def write_png(path, pixels):
    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(pixels).save(path)
    return str(path)


def test_detector_classifies_each_window_warped_to_the_input(model, tmp_path):
    prototxt, weights, w, b = model
    pixels = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    png = write_png(tmp_path / "im.png", pixels)
    det = caffe.Detector(prototxt, weights, raw_scale=255)
    windows = [np.array([0, 0, 4, 4]), np.array([2, 3, 10, 9])]
    found = det.detect_windows([(png, windows)])
    assert [d["filename"] for d in found] == [png, png]
    image = pixels.astype(np.float32) / 255
    for det_out, (y0, x0, y1, x1) in zip(found, windows, strict=True):
        warped = cio.resize_image(image[y0:y1, x0:x1], (SIDE, SIDE)).astype(np.float64)
        want = scores(w, b, warped, raw_scale=255)
        np.testing.assert_allclose(det_out["prediction"], want, rtol=1e-4, atol=1e-3)


def test_detector_context_pad_fills_outside_the_image_with_the_mean(model):
    prototxt, weights, _, _ = model
    mean = np.array([10.0, 20.0, 30.0])
    det = caffe.Detector(
        prototxt, weights, mean=mean, raw_scale=100.0, channel_swap=(2, 1, 0), context_pad=1
    )
    assert tuple(det.crop_dims) == (SIDE, SIDE, CHANNELS)
    image = np.full((8, 8, CHANNELS), 0.5, dtype=np.float32)
    crop = det.crop(image, np.array([0, 0, 3, 3]))  # grown box leaves the top-left corner
    assert crop.shape == (SIDE, SIDE, CHANNELS)
    # The padding is the mean in image space: the net's channel k is the image's
    # channel swap[k], and the raw scale is undone.
    np.testing.assert_allclose(crop[0, 0], [0.3, 0.2, 0.1])
    np.testing.assert_allclose(crop[-1, -1], 0.5)
    plain = caffe.Detector(prototxt, weights)
    np.testing.assert_array_equal(plain.crop(image, [1, 2, 5, 7]), image[1:5, 2:7])
