"""``caffelite export`` from the command line: success, and errors printed once."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from conftest import REPO  # noqa: E402

from caffelite.cli import main  # noqa: E402


def test_export_static_batch_and_opset(tmp_path):
    import onnx

    output = tmp_path / "lenet.onnx"
    model = str(REPO / "models" / "lenet" / "lenet.prototxt")
    argv = ["export", "-model", model, "-output", str(output), "--opset", "13", "--static_batch"]
    assert main(argv) == 0
    loaded = onnx.load(str(output))
    assert loaded.opset_import[0].version == 13
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 64


def test_unmapped_layer_is_one_clear_error(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text(
        'layer { name: "feed" type: "DummyData" top: "x" '
        "dummy_data_param { shape { dim: 2 dim: 3 } } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
        "inner_product_param { num_output: 2 } }\n"
    )
    argv = ["export", "--model", str(model), "--output", str(tmp_path / "x.onnx")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("caffelite export: error: layer 'feed' (type DummyData) has no ONNX")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_opset(tmp_path, capsys):
    model = str(REPO / "models" / "lenet" / "lenet.prototxt")
    assert main(["export", "--model", model, "--output", str(tmp_path / "x"), "--opset", "9"]) == 1
    assert "opset 13 or newer" in capsys.readouterr().err
