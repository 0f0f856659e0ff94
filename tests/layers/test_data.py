"""Data (LMDB + prefetch thread) and MemoryData layers."""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from caffelite import io as cio
from caffelite import mnist
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN
from caffelite.proto import caffe_pb2
from caffelite.rng import set_random_seed
from caffelite.testing import build_layer

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
SCALE = np.float32(0.00390625)


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("caffelite-prefetch")]


@pytest.fixture
def layers():
    """Builds Data layers and closes them after the test; no reader thread may survive."""
    made = []

    def make(text, num_top=2, phase=TRAIN, dtype=np.float32):
        layer, bottom, top = build_layer(text, [], num_top=num_top, phase=phase, dtype=dtype)
        made.append(layer)
        return layer, top

    yield make
    for layer in made:
        layer.close()
    assert prefetch_threads() == []


def data_text(source, batch_size, extra="", transform=""):
    return (
        f'type: "Data" data_param {{ source: "{source}" batch_size: {batch_size} '
        f"backend: LMDB {extra} }} transform_param {{ {transform} }}"
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """10 colour images 3 x 6 x 5 with labels 10..19, written as Caffe Datums."""
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, size=(10, 3, 6, 5), dtype=np.uint8)
    labels = np.arange(10, 20)
    path = tmp_path_factory.mktemp("data") / "synthetic_lmdb"
    mnist.write_lmdb(path, images, labels)
    return str(path), images, labels


def forward(layer, top):
    layer.forward([], top)
    return top[0].data.copy(), (top[1].data.copy() if len(top) > 1 else None)


def test_reads_in_key_order_and_wraps(layers, synthetic):
    source, images, labels = synthetic
    layer, top = layers(data_text(source, 4, transform="scale: 0.00390625"))
    assert top[0].shape == (4, 3, 6, 5) and top[1].shape == (4,)
    order = []
    for _ in range(5):  # 20 records from a 10-record database: wraps twice
        data, label = forward(layer, top)
        assert top[0].dtype == np.float32
        index = (label - 10).astype(int)
        np.testing.assert_array_equal(data, images[index].astype(np.float32) * SCALE)
        order += index.tolist()
    assert order == [i % 10 for i in range(20)]


def test_reader_remaps_the_database_without_losing_its_place(layers, synthetic, monkeypatch):
    """Reopening the database to drop mapped pages must not change what is read."""
    from caffelite.layers import data as data_module

    opened = []
    real_open = data_module._open_env
    monkeypatch.setattr(data_module, "REMAP_EVERY_RECORDS", 3)
    monkeypatch.setattr(
        data_module, "_open_env", lambda path: opened.append(path) or real_open(path)
    )
    source, images, labels = synthetic
    layer, top = layers(data_text(source, 4))
    order = []
    for _ in range(6):  # 24 records from 10: remapped after each batch, wrapping twice
        _, label = forward(layer, top)
        order += (label - 10).astype(int).tolist()
    assert order == [i % 10 for i in range(24)]
    assert len(opened) >= 5


def test_single_top_and_float64_blobs(layers, synthetic):
    source, images, _ = synthetic
    layer, top = layers(data_text(source, 3), num_top=1, dtype=np.float64)
    assert len(top) == 1 and top[0].shape == (3, 3, 6, 5)
    forward(layer, top)
    assert top[0].dtype == np.float64
    np.testing.assert_array_equal(top[0].data, images[:3])


def test_centre_crop_in_test_phase_with_mean_values(layers, synthetic):
    source, images, _ = synthetic
    transform = "crop_size: 4 mean_value: 100 mean_value: 50 mean_value: 10 scale: 0.5"
    layer, top = layers(data_text(source, 5, transform=transform), phase=TEST)
    assert top[0].shape == (5, 3, 4, 4)
    data, _ = forward(layer, top)
    mean = np.array([100, 50, 10], np.float32).reshape(3, 1, 1)
    # centre of 6 x 5 for a 4 x 4 crop: rows 1..4, columns 0..3
    want = (images[:5, :, 1:5, 0:4].astype(np.float32) - mean) * np.float32(0.5)
    np.testing.assert_array_equal(data, want)


def test_mean_file(layers, synthetic, tmp_path):
    source, images, _ = synthetic
    mean = images.mean(axis=0, dtype=np.float64).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(cio.array_to_blobproto(mean[None]).SerializeToString())
    layer, top = layers(data_text(source, 10, transform=f'mean_file: "{path}"'))
    data, _ = forward(layer, top)
    np.testing.assert_allclose(data, images.astype(np.float32) - mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(data.mean(axis=0), 0, atol=1e-4)


def run_batches(text, count, seed, layers, phase=TRAIN):
    set_random_seed(seed)
    layer, top = layers(text, phase=phase)
    batches = [forward(layer, top)[0] for _ in range(count)]
    layer.close()
    return np.stack(batches)


def test_mirror_and_random_crop_are_reproducible(layers, synthetic):
    source, images, _ = synthetic
    text = data_text(source, 10, transform="mirror: true crop_size: 3")
    first = run_batches(text, 3, 5, layers)
    assert first.shape == (3, 10, 3, 3, 3)
    np.testing.assert_array_equal(first, run_batches(text, 3, 5, layers))
    assert not np.array_equal(first, run_batches(text, 3, 6, layers))
    # every image is a 3 x 3 window of the original, flipped or not; both flips occur
    flipped = set()
    for batch in first:
        for image, crop in zip(images, batch, strict=True):
            matches = {
                (flip, r, c)
                for flip in (False, True)
                for r in range(4)
                for c in range(3)
                if np.array_equal((image[:, r : r + 3, c : c + 3])[..., :: -1 if flip else 1], crop)
            }
            assert matches, "output is not a (mirrored) crop of its input"
            flipped |= {flip for flip, _, _ in matches}
    assert flipped == {False, True}


def test_legacy_data_param_transform_fields(layers, synthetic):
    source, images, _ = synthetic
    text = (
        f'type: "Data" data_param {{ source: "{source}" batch_size: 2 backend: LMDB '
        "scale: 0.5 crop_size: 2 }"
    )
    layer, top = layers(text, phase=TEST)
    data, _ = forward(layer, top)
    np.testing.assert_array_equal(data, images[:2, :, 2:4, 1:3].astype(np.float32) * 0.5)


def test_rand_skip_starts_inside_the_database(layers, synthetic):
    source, _, labels = synthetic
    starts = set()
    for seed in range(6):
        set_random_seed(seed)
        layer, top = layers(data_text(source, 3, extra="rand_skip: 7"))
        _, label = forward(layer, top)
        start = int(label[0]) - 10
        assert start < 7
        np.testing.assert_array_equal(label, labels[(start + np.arange(3)) % 10])
        starts.add(start)
        layer.close()
    assert len(starts) > 1


def test_two_layers_share_one_database(layers, synthetic):
    source, images, _ = synthetic
    train, top_train = layers(data_text(source, 2))
    test, top_test = layers(data_text(source, 5), phase=TEST)
    np.testing.assert_array_equal(forward(train, top_train)[0], images[:2])
    np.testing.assert_array_equal(forward(test, top_test)[0], images[:5])
    train.close()
    np.testing.assert_array_equal(forward(test, top_test)[0], images[5:])


def write_records(path, records):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, datum in enumerate(records):
            txn.put(b"%08d" % i, datum.SerializeToString())
    env.close()
    return str(path)


def test_float_datums(layers, tmp_path):
    arrays = np.random.default_rng(2).standard_normal((4, 2, 3, 3)).astype(np.float32)
    source = write_records(
        tmp_path / "floats", [cio.array_to_datum(a, label=i) for i, a in enumerate(arrays)]
    )
    layer, top = layers(data_text(source, 4, transform="scale: 2"))
    data, label = forward(layer, top)
    np.testing.assert_array_equal(data, arrays * np.float32(2))
    np.testing.assert_array_equal(label, [0, 1, 2, 3])


def test_tops_follow_each_batch_shape(layers, tmp_path):
    small = [cio.array_to_datum(np.full((1, 2, 2), i, np.uint8), label=i) for i in range(2)]
    big = [cio.array_to_datum(np.full((1, 3, 4), i, np.uint8), label=i) for i in range(2, 4)]
    layer, top = layers(data_text(write_records(tmp_path / "sizes", small + big), 2))
    assert top[0].shape == (2, 1, 2, 2)
    forward(layer, top)
    data, label = forward(layer, top)
    assert data.shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(data, np.full((2, 1, 3, 4), [[[[2]]], [[[3]]]]))
    np.testing.assert_array_equal(label, [2, 3])


def test_prefetch_reads_ahead_a_bounded_number_of_batches(layers, synthetic):
    source, _, _ = synthetic
    layer, top = layers(data_text(source, 2, extra="prefetch: 3"))
    full = layer._prefetcher.full
    deadline = time.monotonic() + 5
    while full.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert full.qsize() == 3  # all buffers filled before any forward, and no more
    forward(layer, top)
    deadline = time.monotonic() + 5
    while full.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert full.qsize() == 3


def test_reader_error_reaches_forward(layers, tmp_path):
    good = [cio.array_to_datum(np.full((1, 4, 4), i, np.uint8), label=i) for i in range(6)]
    odd = cio.array_to_datum(np.zeros((1, 5, 4), np.uint8), label=9)
    source = write_records(tmp_path / "mixed", good[:4] + [odd] + good[4:])
    layer, top = layers(data_text(source, 2))
    forward(layer, top)
    forward(layer, top)
    message = (
        r"reading '.*mixed'.*record b'00000005' has shape \(1, 4, 4\), but the batch "
        r"started with \(1, 5, 4\)"
    )
    with pytest.raises(CaffeliteError, match=r"layer 'data' \(type Data\): " + message):
        forward(layer, top)
    with pytest.raises(CaffeliteError, match=message):  # and again: the reader is gone
        forward(layer, top)


def test_close_stops_the_thread(layers, synthetic):
    source, _, _ = synthetic
    before = set(prefetch_threads())
    layer, top = layers(data_text(source, 2, extra="prefetch: 2"))
    (thread,) = set(prefetch_threads()) - before
    assert thread.daemon and thread.is_alive()
    forward(layer, top)
    layer.close()
    assert not thread.is_alive()
    layer.close()  # idempotent
    with pytest.raises(CaffeliteError, match="layer was closed"):
        forward(layer, top)


def test_an_abandoned_layer_stops_its_thread(synthetic):
    source, _, _ = synthetic
    layer, _, top = build_layer(data_text(source, 2), [], num_top=2)
    (thread,) = prefetch_threads()
    del layer
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_errors(layers, synthetic, tmp_path):
    source, _, _ = synthetic
    cases = [
        (
            data_text(tmp_path / "nowhere_lmdb", 4),
            r"LMDB '.*nowhere_lmdb' does not exist; create it with: python tools/get_mnist.py "
            r"&& python tools/convert_mnist_data.py",
        ),
        (data_text("data/mnist/mnist_train_lmdb_absent", 4), r"does not exist \(looked in /"),
        (data_text(source, 0), "batch_size must be positive"),
        (data_text(source, 2, extra="prefetch: 0"), "prefetch must be at least 1"),
        ('type: "Data" data_param { batch_size: 2 }', r"data_param.source \(the LMDB path\)"),
        (data_text(source, 2).replace("LMDB", "LEVELDB"), "holds an LMDB .* asked for is LEVELDB"),
        (data_text(source, 2, transform="crop_size: 7"), "crop_size 7 is larger than the 6x5"),
        (
            data_text(source, 2, transform="mean_value: 1 mean_value: 2"),
            "2 mean_value entries for 3-channel images",
        ),
    ]
    for text, message in cases:
        with pytest.raises(CaffeliteError, match=message):
            layers(text)
    empty = tmp_path / "empty_lmdb"
    lmdb.open(str(empty), map_size=1 << 20).close()
    with pytest.raises(CaffeliteError, match="is empty"):
        layers(data_text(empty, 2))
    encoded = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"\x89PNG", encoded=True)
    with pytest.raises(CaffeliteError, match="cannot decode encoded record b'00000000'"):
        layers(data_text(write_records(tmp_path / "enc", [encoded]), 1))
    leveldb = tmp_path / "leveldb"
    leveldb.mkdir()
    (leveldb / "CURRENT").write_text("MANIFEST-000001\n")
    text = f'type: "Data" data_param {{ source: "{leveldb}" batch_size: 2 }}'
    pytest.importorskip("plyvel")
    with pytest.raises(CaffeliteError, match="cannot open LevelDB"):
        layers(text)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no shared MNIST at {SHARED_MNIST}")
def test_real_mnist_slice(layers, tmp_path):
    images, labels = mnist.load_mnist(
        SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
    )
    source = tmp_path / "mnist_test_lmdb"
    mnist.write_lmdb(source, images[:1000], labels[:1000])
    layer, top = layers(data_text(source, 300, transform="scale: 0.00390625"), phase=TEST)
    assert top[0].shape == (300, 1, 28, 28)
    seen = []
    for _ in range(4):
        data, label = forward(layer, top)
        seen.append((data, label))
    index = np.arange(1200) % 1000  # the fourth batch wraps: 900..999 then 0..199
    data = np.concatenate([d for d, _ in seen])
    label = np.concatenate([lab for _, lab in seen])
    np.testing.assert_array_equal(label, labels[index].astype(np.float32))
    np.testing.assert_array_equal(data[:, 0], images[index].astype(np.float32) * SCALE)
    assert data.max() == np.float32(255) * SCALE


# ---- MemoryData --------------------------------------------------------------------------


def memory_layer(batch=2, channels=1, height=2, width=3, extra="", phase=TRAIN):
    text = (
        f'type: "MemoryData" memory_data_param {{ batch_size: {batch} channels: {channels} '
        f"height: {height} width: {width} }} {extra}"
    )
    layer, _, top = build_layer(text, [], num_top=2, dtype=np.float32, phase=phase)
    return layer, top


def test_memory_data_serves_batches_and_wraps():
    layer, top = memory_layer()
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(36, dtype=np.float32).reshape(6, 1, 2, 3)
    labels = np.arange(6, dtype=np.float32) * 10
    layer.set_input_arrays(data, labels)
    for step in range(5):
        layer.forward([], top)
        index = (np.arange(2) + 2 * step) % 6
        np.testing.assert_array_equal(top[0].data, data[index])
        assert top[1].shape == (2, 1, 1, 1)  # (N,) after setup, (N, 1, 1, 1) after forward
        np.testing.assert_array_equal(top[1].data.ravel(), labels[index])
    layer.set_input_arrays(data[:2] + 100, labels[:2].reshape(2, 1, 1, 1))  # restarts at 0
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, data[:2] + 100)
    layer.reset(data, labels, 4)
    for step in range(3):
        layer.forward([], top)
        np.testing.assert_array_equal(top[1].data.ravel(), labels[(np.arange(2) + 2 * step) % 4])
    layer.set_batch_size(4)  # at item 2 of 4: the batch wraps
    layer.forward([], top)
    assert top[0].shape == (4, 1, 2, 3)
    np.testing.assert_array_equal(top[1].data.ravel(), labels[[2, 3, 0, 1]])
    np.testing.assert_array_equal(top[0].data, data[[2, 3, 0, 1]])


def test_memory_data_arrays_are_served_untransformed_as_in_caffe(caplog):
    layer, top = memory_layer(extra="transform_param { scale: 0.5 }")
    data = np.ones((2, 1, 2, 3), np.float32)
    with caplog.at_level(logging.WARNING, logger="caffelite"):
        layer.set_input_arrays(data, np.zeros(2, np.float32))
    assert "does not transform arrays" in caplog.text
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, data)


def test_memory_data_add_datum_vector_transforms():
    layer, top = memory_layer(
        batch=2,
        channels=1,
        height=2,
        width=2,
        phase=TEST,
        extra="transform_param { scale: 0.5 crop_size: 2 }",
    )
    images = np.arange(4 * 3 * 4, dtype=np.uint8).reshape(4, 1, 3, 4)
    layer.add_datum_vector(cio.array_to_datum(a, label=i + 1) for i, a in enumerate(images))
    layer.forward([], top)
    layer.forward([], top)
    # centre crop of 3 x 4 to 2 x 2: rows 0..1, columns 1..2
    np.testing.assert_array_equal(top[0].data, images[2:, :, 0:2, 1:3] * np.float32(0.5))
    np.testing.assert_array_equal(top[1].data.ravel(), [3, 4])
    with pytest.raises(CaffeliteError, match="multiple of batch_size 2 datums, got 3"):
        layer.add_datum_vector(cio.array_to_datum(a) for a in images[:3])
    with pytest.raises(
        CaffeliteError,
        match=r"datums of shape \(2, 3, 3\) transform to "
        r"\(2, 2, 2\), but memory_data_param says \(1, 2, 2\)",
    ):
        layer.add_datum_vector(cio.array_to_datum(np.zeros((2, 3, 3), np.uint8)) for _ in "ab")
    with pytest.raises(CaffeliteError, match="crop_size 2 is larger than the 1x5 input"):
        layer.add_datum_vector(cio.array_to_datum(np.zeros((1, 1, 5), np.uint8)) for _ in "ab")


def test_memory_data_errors():
    layer, top = memory_layer()
    with pytest.raises(CaffeliteError, match=r"call set_input_arrays\(data, labels\)"):
        layer.forward([], top)
    good = np.zeros((4, 1, 2, 3), np.float32)
    labels = np.zeros(4, np.float32)
    cases = [
        ((good.astype(np.float64), labels), "data array must be float32, got float64"),
        ((good, labels.astype(np.int32)), "labels array must be float32, got int32"),
        (
            (np.zeros((4, 1, 3, 2), np.float32), labels),
            r"data array must have shape \(N, 1, 2, 3\), got \(4, 1, 3, 2\)",
        ),
        ((np.zeros((4, 1, 2, 6), np.float32)[..., ::2], labels), "data array must be C-contig"),
        ((good, np.zeros(3, np.float32)), "data has 4 items but labels has 3"),
        ((good, np.zeros((4, 2), np.float32)), r"one value per item.*got \(4, 2\)"),
        ((good[:3], labels[:3]), "n = 3 must be a positive multiple of batch_size 2"),
        ((good.tolist(), labels), "needs numpy arrays"),
    ]
    for args, message in cases:
        with pytest.raises(CaffeliteError, match=message):
            layer.set_input_arrays(*args)
    with pytest.raises(CaffeliteError, match="needs 24 data values and 4 labels, got 18 and 4"):
        layer.reset(good[:3], labels, 4)
    layer.set_input_arrays(good[:2].copy(), labels[:2].copy())
    with pytest.raises(CaffeliteError, match="2 items held are not a multiple of the new"):
        layer.set_batch_size(4)
    with pytest.raises(CaffeliteError, match="memory_data_param needs positive batch_size"):
        memory_layer(channels=0)
    with pytest.raises(CaffeliteError, match="takes exactly 2 top"):
        build_layer(
            'type: "MemoryData" memory_data_param { batch_size: 1 channels: 1 height: 1 width: 1 }',
            [],
            num_top=1,
        )
    assert isinstance(top[0], Blob)
