"""The caffe tool's NetState and weights flags: --stage and --level on train, test and
time, --weights as a comma list, --phase on time."""

import re

import numpy as np
import pytest

import caffelite as caffe
from caffelite.cli import main
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_binary

NET = """
name: "staged"
layer { name: "data" type: "DummyData" top: "x" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "constant" value: 1 }
                           data_filler { type: "constant" value: 0 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "ip_small" type: "InnerProduct" bottom: "h" top: "score"
        include { not_stage: "big" }
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "ip_big" type: "InnerProduct" bottom: "h" top: "score"
        include { stage: "big" }
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "boost" type: "Power" bottom: "score" top: "score" include { min_level: 1 }
        power_param { scale: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


@pytest.fixture
def staged(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 2\n'
        f'snapshot_prefix: "{tmp_path}/run"\nrandom_seed: 3\n'
    )
    return tmp_path


def layer_names(path) -> list[str]:
    return [layer.name for layer in read_binary(path, caffe_pb2.NetParameter()).layer]


def test_train_stage_and_level_select_layers(staged):
    solver = str(staged / "solver.prototxt")
    assert main(["train", "--solver", solver]) == 0
    assert layer_names(staged / "run_iter_2.caffemodel") == ["data", "ip1", "ip_small", "loss"]
    assert main(["train", "--solver", solver, "--stage", "big", "--level", "1"]) == 0
    assert layer_names(staged / "run_iter_2.caffemodel") == [
        "data",
        "ip1",
        "ip_big",
        "boost",
        "loss",
    ]


def write_weights(path, net, values: dict) -> None:
    """A caffemodel holding only the layers in ``values`` (each blob filled with it)."""
    param = net.to_proto()
    keep = [layer for layer in param.layer if layer.name in values]
    for layer in keep:
        for blob in layer.blobs:
            blob.data[:] = [values[layer.name]] * len(blob.data)
    del param.layer[:]
    param.layer.extend(keep)
    path.write_bytes(param.SerializeToString())


def test_weights_comma_list_and_test_stage_level(staged, capsys):
    model = str(staged / "net.prototxt")
    big = caffe.Net(model, caffe.TEST, stages=["big"], level=1)
    write_weights(staged / "a.caffemodel", big, {"ip1": 0.5})
    write_weights(staged / "b.caffemodel", big, {"ip_big": 0.25})
    weights = f"{staged / 'a.caffemodel'},{staged / 'b.caffemodel'}"
    # train: both files are loaded (0 iterations: the snapshot holds what was loaded)
    (staged / "zero.prototxt").write_text(
        (staged / "solver.prototxt").read_text().replace("max_iter: 2", "max_iter: 0")
    )
    args = ["train", "--solver", str(staged / "zero.prototxt"), "--weights", weights]
    assert main([*args, "--stage", "big"]) == 0
    loaded = read_binary(staged / "run_iter_0.caffemodel", caffe_pb2.NetParameter())
    blobs = {layer.name: layer.blobs for layer in loaded.layer}
    assert set(blobs["ip1"][0].data) == {0.5} and set(blobs["ip_big"][1].data) == {0.25}
    capsys.readouterr()
    # test: the same two files, the big stage at level 1 -> its layers and its loss
    args = ["test", "--model", model, "--weights", weights, "--iterations", "2"]
    assert main([*args, "--stage", "big", "--level", "1"]) == 0
    printed = capsys.readouterr().out
    big.copy_from(staged / "a.caffemodel")
    big.copy_from(staged / "b.caffemodel")
    expected = float(big.forward()["loss"])
    loss = float(re.search(r"^loss = ([0-9.]+)", printed, re.M).group(1))
    assert loss == pytest.approx(expected, abs=1e-4)
    # h = 3 * 0.5 + 0.5 = 2; both scores 2 * (0.25 * 6 + 0.25): a uniform softmax, ln 2
    assert expected == pytest.approx(np.log(2), rel=1e-5)


def test_time_phase_stage_level(staged, capsys):
    model = str(staged / "net.prototxt")
    assert main(["time", "--model", model, "--iterations", "1", "--phase", "TEST"]) == 0
    out = capsys.readouterr().out
    assert "ip_small\tforward:" in out and "ip_big" not in out and "boost" not in out
    args = ["time", "--model", model, "--iterations", "1", "--stage", "big", "--level", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ip_big\tforward:" in out and "boost\tforward:" in out and "ip_small" not in out
    with pytest.raises(SystemExit):
        main(["time", "--model", model, "--phase", "VALIDATE"])
