"""HDF5Data (rows of datasets named like the tops, across files) and HDF5Output."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffelite as caffe
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text
from caffelite.rng import set_random_seed
from caffelite.testing import build_layer


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, values in datasets.items():
            f.create_dataset(name, data=values)
    return str(path)


def write_list(tmp_path, *files, name="list.txt"):
    listing = tmp_path / name
    listing.write_text("\n".join(str(f) for f in files) + "\n")
    return str(listing)


def hdf5_layer(source, batch_size, tops=("data", "label"), extra="", dtype=np.float32):
    top_text = " ".join(f'top: "{t}"' for t in tops)
    text = (
        f'type: "HDF5Data" {top_text} {extra} '
        f'hdf5_data_param {{ source: "{source}" batch_size: {batch_size} }}'
    )
    return build_layer(text, [], num_top=len(tops), dtype=dtype)


def file_rows(n, start=0):
    """data rows (n, 2, 3) whose every value identifies the row; labels start..start+n-1."""
    ids = np.arange(start, start + n, dtype=np.float64)
    return ids[:, None, None] * np.ones((1, 2, 3)), ids


def batches(layer, bottom, top, count):
    out = []
    for _ in range(count):
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        out.append((top[0].data.copy(), top[1].data.copy()))
    return out


def test_rows_in_order_wrapping_within_one_file(tmp_path):
    data, label = file_rows(5)
    source = write_list(tmp_path, write_h5(tmp_path / "a.h5", data=data, label=label))
    layer, bottom, top = hdf5_layer(source, 2)
    assert top[0].shape == (2, 2, 3) and top[1].shape == (2,)
    assert top[0].dtype == np.float32
    got = [lab.tolist() for _, lab in batches(layer, bottom, top, 4)]
    assert got == [[0, 1], [2, 3], [4, 0], [1, 2]]
    images = batches(layer, bottom, top, 1)[0][0]
    np.testing.assert_array_equal(images, data[[3, 4]])  # rows follow their labels


def test_batches_continue_into_the_next_file_and_wrap(tmp_path):
    d1, l1 = file_rows(3)
    d2, l2 = file_rows(2, start=10)
    source = write_list(
        tmp_path,
        write_h5(tmp_path / "one.h5", data=d1, label=l1),
        write_h5(tmp_path / "two.h5", data=d2, label=l2),
    )
    layer, bottom, top = hdf5_layer(source, 4)
    got = batches(layer, bottom, top, 3)
    assert [lab.tolist() for _, lab in got] == [[0, 1, 2, 10], [11, 0, 1, 2], [10, 11, 0, 1]]
    np.testing.assert_array_equal(got[0][0][3], d2[0])


def test_tops_read_the_datasets_of_their_names(tmp_path):
    rng = np.random.default_rng(0)
    features, target, weight = rng.random((4, 5)), rng.random((4, 1, 2)), rng.random(4)
    path = write_h5(tmp_path / "x.h5", features=features, target=target, weight=weight, junk=[1])
    layer, bottom, top = hdf5_layer(
        write_list(tmp_path, path), 3, tops=("target", "features", "weight"), dtype=np.float64
    )
    assert [t.shape for t in top] == [(3, 1, 2), (3, 5), (3,)]
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, target[:3])
    np.testing.assert_array_equal(top[1].data, features[:3])
    np.testing.assert_array_equal(top[2].data, weight[:3])


def test_shuffle_permutes_rows_each_pass_and_keeps_files_whole(tmp_path):
    d1, l1 = file_rows(4)
    d2, l2 = file_rows(4, start=10)
    source = write_list(
        tmp_path,
        write_h5(tmp_path / "one.h5", data=d1, label=l1),
        write_h5(tmp_path / "two.h5", data=d2, label=l2),
    )
    set_random_seed(7)
    text = (
        'type: "HDF5Data" top: "data" top: "label" '
        f'hdf5_data_param {{ source: "{source}" batch_size: 4 shuffle: true }}'
    )
    layer, bottom, top = build_layer(text, [], num_top=2)
    passes = []
    for _ in range(6):
        got = batches(layer, bottom, top, 2)
        labels = [lab.tolist() for _, lab in got]
        for data, lab in got:  # data rows still travel with their labels
            np.testing.assert_array_equal(data[:, 0, 0], lab)
        # every pass holds every row once; each batch of 4 is one whole file
        assert sorted(labels[0] + labels[1]) == [0, 1, 2, 3, 10, 11, 12, 13]
        assert {min(lab) // 10 for lab in labels} == {0, 1}
        passes.append(labels[0] + labels[1])
    assert len({tuple(p) for p in passes}) > 1  # the order changes between passes
    assert any(p[:4] != sorted(p[:4]) for p in passes)  # rows are shuffled within files


def test_in_a_net_from_prototxt(tmp_path):
    data, label = file_rows(4)
    source = write_list(tmp_path, write_h5(tmp_path / "a.h5", data=data, label=label))
    text = f"""
        layer {{ name: "in" type: "HDF5Data" top: "data" top: "label"
                 hdf5_data_param {{ source: "{source}" batch_size: 2 }} }}
        layer {{ name: "flat" type: "Flatten" bottom: "data" top: "flat" }}
    """
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    out = net.forward()
    np.testing.assert_array_equal(out["flat"], data[:2].reshape(2, 6))
    np.testing.assert_array_equal(out["label"], [0, 1])


def test_errors_name_files_and_datasets(tmp_path):
    data, label = file_rows(3)
    good = write_h5(tmp_path / "good.h5", data=data, label=label)
    with pytest.raises(CaffeliteError, match="cannot open source list"):
        hdf5_layer(str(tmp_path / "nolist.txt"), 1)
    with pytest.raises(CaffeliteError, match="lists no files"):
        hdf5_layer(write_list(tmp_path, "", name="empty.txt"), 1)
    with pytest.raises(CaffeliteError, match=r"HDF5 file '.*absent\.h5' \(listed in"):
        hdf5_layer(write_list(tmp_path, tmp_path / "absent.h5", name="l1.txt"), 1)
    with pytest.raises(CaffeliteError, match=r"has no dataset 'label'.*the file has: data"):
        hdf5_layer(write_list(tmp_path, write_h5(tmp_path / "d.h5", data=data), name="l2"), 1)
    uneven = write_h5(tmp_path / "u.h5", data=data, label=np.arange(2.0))
    with pytest.raises(CaffeliteError, match="differ in rows: 'data' has 3, 'label' has 2"):
        hdf5_layer(write_list(tmp_path, uneven, name="l3"), 1)
    with pytest.raises(CaffeliteError, match="does not transform data"):
        hdf5_layer(write_list(tmp_path, good, name="l4"), 1, extra="transform_param { scale: 2 }")
    with pytest.raises(CaffeliteError, match="batch_size must be positive, got 0"):
        hdf5_layer(write_list(tmp_path, good, name="l5"), 0)
    other = write_h5(tmp_path / "o.h5", data=np.zeros((2, 3, 2)), label=np.zeros(2))
    layer, bottom, top = hdf5_layer(write_list(tmp_path, good, other, name="l6"), 3)
    with pytest.raises(CaffeliteError, match=r"rows of shape \(3, 2\), but the first file's"):
        layer.forward(bottom, top)


def test_a_float64_value_beyond_float32_is_refused_not_made_inf(tmp_path):
    data, label = file_rows(3)
    data[2, 1, 0] = 1e39  # finite in the file, inf as float32
    listing = write_list(tmp_path, write_h5(tmp_path / "big.h5", data=data, label=label))
    with pytest.raises(
        CaffeliteError,
        match=r"dataset 'data' in '.*big\.h5': value 1e\+39 at row 2 \(index \(2, 1, 0\)\) "
        r"is beyond the range of float32 blobs",
    ):
        hdf5_layer(listing, 1)
    layer, bottom, top = hdf5_layer(listing, 3, dtype=np.float64)  # fits a float64 net
    layer.forward(bottom, top)
    assert top[0].data[2, 1, 0] == 1e39
    data[2, 1, 0] = np.inf  # stored as inf: the data's own value, kept
    inf_listing = write_list(
        tmp_path, write_h5(tmp_path / "inf.h5", data=data, label=label), name="i"
    )
    layer, bottom, top = hdf5_layer(inf_listing, 3)
    layer.forward(bottom, top)
    assert np.isinf(top[0].data[2, 1, 0])


def test_hdf5_output_appends_each_batch(tmp_path):
    path = tmp_path / "out.h5"
    rng = np.random.default_rng(1)
    batches_in = [(rng.random((2, 3)), rng.random((2, 1))) for _ in range(3)]
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{path}" }}'
    layer, bottom, top = build_layer(text, batches_in[0], num_top=0, dtype=np.float32)
    assert top == [] and path.exists()
    for data, label in batches_in:
        bottom[0].data[...] = data
        bottom[1].data[...] = label
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
    layer.backward(top, [True, True], bottom)  # a sink: nothing flows back
    assert not bottom[0].has_diff
    layer.close()
    with h5py.File(path, "r") as f:  # Caffe's 4-D num/channels/height/width form
        assert sorted(f) == ["data", "label"]
        assert f["data"].shape == (6, 3, 1, 1) and f["label"].shape == (6, 1, 1, 1)
        np.testing.assert_allclose(
            f["data"][()].reshape(6, 3), np.concatenate([d for d, _ in batches_in]), rtol=1e-6
        )
        np.testing.assert_allclose(
            f["label"][()].reshape(6, 1), np.concatenate([lb for _, lb in batches_in]), rtol=1e-6
        )
        assert f["data"].dtype == np.float32
    with pytest.raises(CaffeliteError, match="already closed"):
        layer.forward(bottom, top)


def test_hdf5_output_then_hdf5_data_round_trip(tmp_path):
    path = tmp_path / "out.h5"
    data, label = np.arange(12.0).reshape(4, 3), np.arange(4.0)
    out, bottom, _ = build_layer(
        f'type: "HDF5Output" hdf5_output_param {{ file_name: "{path}" }}',
        [data, label],
        num_top=0,
    )
    out.forward(bottom, [])
    out.close()
    reader, rbottom, rtop = hdf5_layer(write_list(tmp_path, path), 4, dtype=np.float64)
    reader.forward(rbottom, rtop)
    assert rtop[0].shape == (4, 3, 1, 1) and rtop[1].shape == (4, 1, 1, 1)
    np.testing.assert_array_equal(rtop[0].data.reshape(4, 3), data)
    np.testing.assert_array_equal(rtop[1].data.reshape(4), label)


def test_hdf5_output_errors(tmp_path):
    with pytest.raises(CaffeliteError, match="file_name is empty"):
        build_layer('type: "HDF5Output"', [np.zeros((2, 1)), np.zeros(2)], num_top=0)
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{tmp_path / "o.h5"}" }}'
    with pytest.raises(CaffeliteError, match=r"same batch size.*\(2, 1\) and \(3,\)"):
        build_layer(text, [np.zeros((2, 1)), np.zeros(3)], num_top=0)
    layer, bottom, top = build_layer(text, [np.zeros((2, 1)), np.zeros(2)], num_top=0)
    layer.forward(bottom, top)
    bottom[0].reshape(2, 5)
    with pytest.raises(CaffeliteError, match=r"earlier batches .* rows of shape \(1, 1, 1\)"):
        layer.forward(bottom, top)
    bottom[0].reshape(2, 1, 1, 1, 1)
    with pytest.raises(CaffeliteError, match=r"\(2, 1, 1, 1, 1\); HDF5Output writes .* 4 axes"):
        layer.forward(bottom, top)
    layer.close()
    with pytest.raises(CaffeliteError, match="takes exactly 2 bottom"):
        build_layer(text, [np.zeros((2, 1))], num_top=0)
