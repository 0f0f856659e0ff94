"""tools/upgrade_solver_proto_text.py: the legacy solver_type enum becomes the type string."""

import importlib.util

import pytest
from conftest import REPO

from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_text


def load_tool():
    path = REPO / "tools" / "upgrade_solver_proto_text.py"
    spec = importlib.util.spec_from_file_location("upgrade_solver_proto_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("SGD", "SGD"),
        ("NESTEROV", "Nesterov"),
        ("ADAGRAD", "AdaGrad"),
        ("RMSPROP", "RMSProp"),
        ("ADADELTA", "AdaDelta"),
        ("ADAM", "Adam"),
    ],
)
def test_solver_type_enum_becomes_type_string(tmp_path, capsys, old, new):
    source = tmp_path / "old_solver.prototxt"
    source.write_text(f'net: "n.prototxt"\nbase_lr: 0.5\nsolver_type: {old}\nmax_iter: 7\n')
    target = tmp_path / "new_solver.prototxt"
    assert load_tool().main([str(source), str(target)]) == 0
    text = target.read_text()
    assert "solver_type" not in text and f'type: "{new}"' in text
    param = read_text(target, caffe_pb2.SolverParameter())
    assert (param.net, param.base_lr, param.max_iter) == ("n.prototxt", 0.5, 7)
    assert capsys.readouterr().out == f"Wrote upgraded SolverParameter text proto to {target}\n"


def test_current_solver_is_written_back_with_a_note(tmp_path, capsys):
    source = tmp_path / "solver.prototxt"
    source.write_text('net: "n.prototxt"\ntype: "Adam"\n')
    target = tmp_path / "out.prototxt"
    assert load_tool().main([str(source), str(target)]) == 0
    assert read_text(target, caffe_pb2.SolverParameter()).type == "Adam"
    assert f"File already in latest proto format: {source}" in capsys.readouterr().err


def test_both_fields_is_an_error(tmp_path, capsys):
    source = tmp_path / "solver.prototxt"
    source.write_text('type: "SGD"\nsolver_type: ADAM\n')
    assert load_tool().main([str(source), str(tmp_path / "out.prototxt")]) == 1
    err = capsys.readouterr().err
    assert "upgrade_solver_proto_text:" in err and "cannot both be given" in err
    assert not (tmp_path / "out.prototxt").exists()
