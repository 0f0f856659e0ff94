"""extract_features: the named blobs of N mini-batches as float Datums, keyed '%010d'."""

from __future__ import annotations

import numpy as np
import pytest

import caffelite as caffe
from caffelite import db
from caffelite.datasets.features import extract_features
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


@pytest.fixture
def trained(tmp_path):
    """A Data -> InnerProduct -> ReLU net over a 5-record LMDB, and its saved weights."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 1, 2, 3), dtype=np.uint8)
    source = tmp_path / "in_lmdb"
    with db.Writer(source, "lmdb") as writer:
        for i, image in enumerate(images):
            datum = caffe_pb2.Datum(channels=1, height=2, width=3, data=image.tobytes(), label=i)
            writer.put(b"%08d" % i, datum.SerializeToString())
    model = tmp_path / "net.prototxt"
    model.write_text(
        f'layer {{ name: "data" type: "Data" top: "data" top: "label" '
        f'data_param {{ source: "{source}" batch_size: 2 backend: LMDB }} '
        f"transform_param {{ scale: 0.01 }} }}\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        'inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }\n'
    )
    net = caffe.Net(str(model), caffe.TEST)
    weights = rng.normal(size=(4, 6)).astype(np.float32)
    net.params["ip"][0].data[...] = weights
    net.params["ip"][1].data[...] = [1, 2, 3, 4]
    net.save(str(tmp_path / "w.caffemodel"))
    for layer in net.layers:
        if hasattr(layer, "close"):
            layer.close()
    return str(model), str(tmp_path / "w.caffemodel"), images, weights


def floats(path):
    out = []
    for key, value in db.read_records(path):
        datum = caffe_pb2.Datum.FromString(value)
        out.append((key, (datum.channels, datum.height, datum.width), list(datum.float_data)))
    return out


def test_features_of_two_blobs_for_three_batches(trained, tmp_path, load_tool):
    model, weights, images, w = trained
    ip_db, data_db = str(tmp_path / "ip_feats"), str(tmp_path / "data_feats")
    argv = [weights, model, "ip,data", f"{ip_db},{data_db}", "3", "lmdb"]
    assert load_tool("extract_features").main(argv) == 0
    ip, data = floats(ip_db), floats(data_db)
    assert [k for k, _, _ in ip] == [b"%010d" % i for i in range(6)]  # 3 batches of 2
    assert {shape for _, shape, _ in ip} == {(4, 1, 1)}  # (N, 4): legacy channels 4
    assert {shape for _, shape, _ in data} == {(1, 2, 3)}
    order = [0, 1, 2, 3, 4, 0]  # the Data layer wraps
    inputs = images[order].reshape(6, -1).astype(np.float32) * np.float32(0.01)
    np.testing.assert_allclose([d for _, _, d in data], inputs, rtol=1e-6)
    np.testing.assert_allclose([d for _, _, d in ip], inputs @ w.T + [1, 2, 3, 4], rtol=1e-5)


def test_errors(trained, tmp_path):
    model, weights, _, _ = trained
    with pytest.raises(CaffeliteError, match="number of blob names and dataset names"):
        extract_features(weights, model, ["ip", "data"], [str(tmp_path / "a")], 1)
    with pytest.raises(CaffeliteError, match=r"unknown feature blob name\(s\) \['fc7'\]"):
        extract_features(weights, model, ["fc7"], [str(tmp_path / "a")], 1)
