"""Net drawing: DOT text for LeNet, labels, phase filtering, and the draw_net tool."""

import importlib.util
import re

import pytest
from conftest import REPO

import caffelite as caffe
from caffelite import draw
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text, read_text

LENET = REPO / "models" / "lenet" / "lenet_train_test.prototxt"


def lenet():
    return read_text(LENET, caffe_pb2.NetParameter())


def edges(dot: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', dot, flags=re.M))


def node_labels(dot: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*"([^"]+)" \[.*label="((?:[^"\\]|\\.)*)"', dot, flags=re.M))


def test_lenet_dot_has_every_layer_blob_and_edge():
    param = lenet()
    dot = draw.get_dot_graph(param)
    assert dot.startswith('digraph "LeNet" {') and dot.rstrip().endswith("}")
    labels = node_labels(dot)
    for layer in param.layer:
        assert f"{layer.name}_{layer.type}" in labels
        for blob in list(layer.bottom) + list(layer.top):
            assert labels[f"{blob}_blob"] == blob
    expected = set()
    for layer in param.layer:
        node = f"{layer.name}_{layer.type}"
        expected |= {(f"{b}_blob", node) for b in layer.bottom}
        expected |= {(node, f"{t}_blob") for t in layer.top}
    assert edges(dot) == expected
    assert ("ip1_blob", "relu1_ReLU") in expected and ("relu1_ReLU", "ip1_blob") in expected
    assert len(re.findall(r"->", dot)) == len(expected)  # no duplicate edges
    # the TRAIN and TEST "mnist" Data layers share a node; their edge labels are joined
    assert '"mnist_Data" -> "data_blob" [label="Batch 64 / Batch 100"];' in dot


def test_labels_styles_and_edge_labels():
    dot = draw.get_dot_graph(lenet(), rankdir="LR")
    labels = node_labels(dot)
    assert labels["conv1_Convolution"] == (
        r"conv1\n(Convolution)\nkernel size: 5\nstride: 1\npad: 0"
    )
    assert labels["pool1_Pooling"] == r"pool1\n(Pooling MAX)\nkernel size: 2\nstride: 2\npad: 0"
    assert labels["ip1_InnerProduct"] == r"ip1\n(InnerProduct)"
    assert re.search(r'"conv1_Convolution" \[shape="record".*fillcolor="#FF5050"', dot)
    assert re.search(r'"relu1_ReLU" \[.*fillcolor="#90EE90"', dot)  # in-place neuron layer
    assert re.search(r'"data_blob" \[shape="octagon"', dot)
    assert '"conv1_Convolution" -> "conv1_blob" [label="20"];' in dot
    assert '"ip2_InnerProduct" -> "ip2_blob" [label="10"];' in dot
    assert '"mnist_Data" -> "data_blob" [label="Batch 64"];' in draw.get_dot_graph(
        lenet(), phase=caffe.TRAIN
    )
    vertical = draw.get_dot_graph(lenet(), rankdir="BT")
    assert "rankdir=BT;" in vertical
    assert node_labels(vertical)["conv1_Convolution"] == (
        "conv1 (Convolution) kernel size: 5 stride: 1 pad: 0"
    )
    unlabelled = draw.get_dot_graph(lenet(), label_edges=False)
    assert '[label="20"]' not in unlabelled


def test_phase_filtering():
    all_layers = node_labels(draw.get_dot_graph(lenet()))
    train = node_labels(draw.get_dot_graph(lenet(), phase=caffe.TRAIN))
    test = node_labels(draw.get_dot_graph(lenet(), phase=caffe.TEST))
    assert "accuracy_Accuracy" in all_layers and "accuracy_Accuracy" in test
    assert "accuracy_Accuracy" not in train and "accuracy_blob" not in train
    assert "loss_SoftmaxWithLoss" in train and "loss_SoftmaxWithLoss" in test
    assert re.search(r"Batch 100", draw.get_dot_graph(lenet(), phase=caffe.TEST))
    excluded = parse_text(
        'layer { name: "a" type: "ReLU" bottom: "x" top: "x" exclude { phase: TEST } }',
        caffe_pb2.NetParameter(),
    )
    assert "a_ReLU" in draw.get_dot_graph(excluded, phase=caffe.TRAIN)
    assert "a_ReLU" not in draw.get_dot_graph(excluded, phase=caffe.TEST)


def test_display_lrm_and_escaping():
    param = parse_text(
        """name: "odd \\"net\\""
           layer { name: "c{1}" type: "Convolution" bottom: "in|put" top: "c"
                   param { lr_mult: 0 } param { lr_mult: 2 }
                   convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }""",
        caffe_pb2.NetParameter(),
    )
    dot = draw.get_dot_graph(param, display_lrm=True)
    assert dot.startswith(r'digraph "odd \"net\"" {')
    assert r"c\{1\}\n(Convolution)\nkernel size: 3\nstride: 1\npad: 1\nlr mult: 0.0, 2.0" in dot
    assert r'label="in|put"' in dot  # blob labels are plain octagons, not records
    with pytest.raises(CaffeliteError, match="rankdir must be one of"):
        draw.get_dot_graph(param, rankdir="XY")


def test_draw_net_to_file_and_missing_graphviz(tmp_path, monkeypatch):
    out = tmp_path / "lenet.dot"
    draw.draw_net_to_file(lenet(), out, "TB", caffe.TEST)
    assert out.read_text() == draw.get_dot_graph(lenet(), "TB", phase=caffe.TEST)
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(CaffeliteError, match="'dot' program is not installed"):
        draw.draw_net_to_file(lenet(), tmp_path / "lenet.png")


def _tool():
    spec = importlib.util.spec_from_file_location("draw_net", REPO / "tools" / "draw_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_dot_and_falls_back_without_graphviz(tmp_path, monkeypatch, capsys):
    tool = _tool()
    out = tmp_path / "net.gv"
    assert tool.main([str(LENET), str(out), "--phase", "TRAIN", "--rankdir", "TB"]) == 0
    assert out.read_text() == draw.get_dot_graph(lenet(), "TB", phase=caffe.TRAIN)
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    png = tmp_path / "net.png"
    assert tool.main([str(LENET), str(png)]) == 1
    assert not png.exists()
    assert (tmp_path / "net.dot").read_text() == draw.get_dot_graph(lenet())
    assert "dot -Tpng" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "nope.prototxt"), str(out)]) == 1


def test_tool_draws_v1_nets(tmp_path):
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('layers { name: "r" type: RELU bottom: "x" top: "y" }')
    out = tmp_path / "v1.dot"
    assert _tool().main([str(v1), str(out)]) == 0
    assert '"x_blob" -> "r_ReLU";' in out.read_text()


def test_tool_reports_an_unwritable_output_in_one_line(tmp_path, capsys):
    assert _tool().main([str(LENET), str(tmp_path / "missing" / "net.dot")]) == 1
    err = capsys.readouterr().err
    assert "draw_net: cannot write" in err and "No such file or directory" in err
    assert "Traceback" not in err


def test_get_pydot_graph_gives_pycaffes_object_of_the_same_graph():
    pydot = pytest.importorskip("pydot")
    graph = draw.get_pydot_graph(lenet(), "TB", phase=caffe.TEST)
    assert isinstance(graph, pydot.Dot)
    assert graph.get_rankdir() == "TB"
    names = {node.get_name().strip('"') for node in graph.get_nodes()}
    assert {"conv1_Convolution", "conv1_blob", "loss_SoftmaxWithLoss"} <= names
    dot_edges = draw.get_dot_graph(lenet(), "TB", phase=caffe.TEST).count(" -> ")
    assert len(graph.get_edges()) == dot_edges


def test_draw_net_to_file_renders_png_with_graphviz(tmp_path):
    if not draw.graphviz_available():
        pytest.skip("Graphviz's dot program is not installed")
    out = tmp_path / "lenet.png"
    draw.draw_net_to_file(lenet(), str(out), "LR", caffe.TRAIN)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
