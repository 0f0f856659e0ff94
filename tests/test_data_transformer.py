"""DataTransformer against a plain per-pixel reference of Caffe's Transform(Datum)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from caffelite import io as cio
from caffelite.data_transformer import DataTransformer, load_mean_file
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN
from caffelite.proto import caffe_pb2


def make(text: str = "", phase: int = TRAIN, rng=None) -> DataTransformer:
    param = caffe_pb2.TransformationParameter()
    text_format.Merge(text, param)
    return DataTransformer(param, phase, rng)


def reference(images, offsets, flips, crop, scale=1.0, mean=None, mean_values=None):
    """Caffe's loop: top[c, h, w'] = (x[c, h_off + h, w_off + w] - mean[...]) * scale,
    where w' = crop - 1 - w when mirrored; the mean is indexed at the source pixel."""
    n, c, height, width = images.shape
    oh, ow = (crop, crop) if crop else (height, width)
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(n):
        h_off, w_off = offsets[i]
        for ch in range(c):
            for h in range(oh):
                for w in range(ow):
                    src = (ch, h_off + h, w_off + w)
                    value = np.float32(images[i][src])
                    if mean is not None:
                        value = value - np.float32(mean[src])
                    elif mean_values is not None:
                        mv = mean_values[0] if len(mean_values) == 1 else mean_values[ch]
                        value = value - np.float32(mv)
                    tw = ow - 1 - w if flips[i] else w
                    out[i, ch, h, tw] = value * np.float32(scale)
    return out


class ScriptedRng:
    """Hands out given draws and records what was asked, to pin crops and flips."""

    def __init__(self, *draws):
        self.draws = [np.asarray(d) for d in draws]
        self.calls = []

    def integers(self, low, high, size):
        self.calls.append((low, high, size))
        return self.draws.pop(0)


@pytest.fixture
def images():
    return np.random.default_rng(3).integers(0, 256, size=(4, 3, 6, 5), dtype=np.uint8)


def test_identity_converts_to_float32(images):
    out = make().transform(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, images.astype(np.float32))


def test_scale_and_single_image(images):
    t = make("scale: 0.00390625")
    want = reference(images, [(0, 0)] * 4, [False] * 4, 0, scale=0.00390625)
    np.testing.assert_array_equal(t.transform(images), want)
    np.testing.assert_array_equal(t.transform(images[1]), want[1])


@pytest.mark.parametrize("values", [[100.5], [10.0, 128.0, 250.0]])
def test_mean_value(images, values):
    text = " ".join(f"mean_value: {v}" for v in values) + " scale: 0.5"
    want = reference(images, [(0, 0)] * 4, [False] * 4, 0, 0.5, mean_values=values)
    np.testing.assert_array_equal(make(text).transform(images), want)


def test_mean_value_count_must_match_channels(images):
    with pytest.raises(CaffeliteError, match="2 mean_value entries for 3-channel images"):
        make("mean_value: 1 mean_value: 2").transform(images)


def write_mean(path, mean, legacy=False):
    if legacy:
        blob = caffe_pb2.BlobProto(
            num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2]
        )
        blob.data.extend(mean.ravel().tolist())
    else:
        blob = cio.array_to_blobproto(mean[None])
    path.write_bytes(blob.SerializeToString())
    return str(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_mean_file_test_phase_centre_crop(tmp_path, images, legacy):
    mean = np.random.default_rng(5).uniform(0, 255, size=(3, 6, 5)).astype(np.float32)
    path = write_mean(tmp_path / "mean.binaryproto", mean, legacy)
    np.testing.assert_array_equal(load_mean_file(path), mean)
    t = make(f'mean_file: "{path}" crop_size: 3 scale: 0.25', phase=TEST)
    assert not t.needs_rng
    assert t.infer_blob_shape(images.shape) == (4, 3, 3, 3)
    # centre: ((6 - 3) // 2, (5 - 3) // 2) = (1, 1)
    want = reference(images, [(1, 1)] * 4, [False] * 4, 3, 0.25, mean=mean)
    np.testing.assert_array_equal(t.transform(images), want)


def test_random_crop_and_mirror_follow_the_draws(tmp_path, images):
    """The mean moves with the crop and the flip (Caffe indexes it at the source pixel)."""
    mean = np.random.default_rng(6).uniform(0, 255, size=(3, 6, 5)).astype(np.float32)
    path = write_mean(tmp_path / "mean.binaryproto", mean)
    flips = np.array([1, 0, 1, 1])
    h_off = np.array([0, 2, 3, 1])
    w_off = np.array([2, 0, 1, 2])
    rng = ScriptedRng(flips, h_off, w_off)
    t = make(f'mean_file: "{path}" crop_size: 3 mirror: true scale: 2', phase=TRAIN, rng=rng)
    out = t.transform(images)
    # flips from a fair coin, offsets uniform over every window that fits
    assert rng.calls == [(0, 2, 4), (0, 6 - 3 + 1, 4), (0, 5 - 3 + 1, 4)]
    want = reference(images, list(zip(h_off, w_off, strict=True)), flips, 3, 2.0, mean=mean)
    np.testing.assert_array_equal(out, want)


def test_mirror_without_crop_and_in_test_phase(images):
    flips = np.array([0, 1, 1, 0])
    for phase in (TRAIN, TEST):  # Caffe mirrors at random in both phases when asked
        rng = ScriptedRng(flips)
        out = make("mirror: true mean_value: 3", phase=phase, rng=rng).transform(images)
        want = reference(images, [(0, 0)] * 4, flips, 0, mean_values=[3])
        np.testing.assert_array_equal(out, want)
        assert rng.calls == [(0, 2, 4)]


def test_test_phase_crop_without_mirror_draws_nothing(images):
    rng = ScriptedRng()
    out = make("crop_size: 4", phase=TEST, rng=rng).transform(images)
    assert rng.calls == []
    np.testing.assert_array_equal(out, reference(images, [(1, 0)] * 4, [False] * 4, 4))


def test_seeded_generator_is_reproducible(images):
    text = "crop_size: 4 mirror: true"
    a = make(text, rng=np.random.default_rng(42)).transform(images)
    b = make(text, rng=np.random.default_rng(42)).transform(images)
    np.testing.assert_array_equal(a, b)


def test_float_input_and_out_buffer(images):
    x = images.astype(np.float64) / 3
    out = np.full((4, 3, 6, 5), np.nan, np.float32)
    got = make("scale: 3").transform(x, out=out)
    assert got is out
    np.testing.assert_allclose(out, x.astype(np.float32) * np.float32(3), rtol=1e-6)
    with pytest.raises(CaffeliteError, match=r"output has shape \(4, 3, 6, 5\), expected"):
        make("crop_size: 2").transform(x, out=out)


def test_errors(tmp_path, images):
    with pytest.raises(CaffeliteError, match="either mean_file or mean_value"):
        make('mean_file: "m" mean_value: 1')
    with pytest.raises(CaffeliteError, match="mean_file '.*nowhere' does not exist"):
        make(f'mean_file: "{tmp_path}/nowhere"')
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xff\xff")
    with pytest.raises(CaffeliteError, match="is not a binary BlobProto"):
        make(f'mean_file: "{garbage}"')
    wrong = write_mean(tmp_path / "wrong.binaryproto", np.zeros((1, 6, 5), np.float32))
    with pytest.raises(CaffeliteError, match=r"has shape \(1, 6, 5\), but the images are"):
        make(f'mean_file: "{wrong}"').transform(images)
    with pytest.raises(CaffeliteError, match="crop_size 6 is larger than the 6x5 input"):
        make("crop_size: 6").transform(images)
    with pytest.raises(CaffeliteError, match=r"\(N, C, H, W\) or \(C, H, W\), got \(6, 5\)"):
        make().transform(images[0, 0])
