"""allow_python_layers=False refuses Python layers before any module is imported."""

from __future__ import annotations

import sys

import pytest
from google.protobuf import text_format

import caffelite
from caffelite.errors import CaffeliteError
from caffelite.net import Net
from caffelite.proto import caffe_pb2

NET = """
name: "untrusted"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }
layer { name: "evil" type: "Python" bottom: "x" top: "y" include { phase: TRAIN }
        python_param { module: "untrusted_module" layer: "Layer" } }
"""


@pytest.fixture
def untrusted_module(tmp_path, monkeypatch):
    """A module whose import would be the code execution a server must not allow."""
    (tmp_path / "untrusted_module.py").write_text(
        "import caffelite\nRAN = True\nclass Layer(caffelite.Layer):\n"
        "    def reshape(self, bottom, top): top[0].reshape(*bottom[0].shape)\n"
        "    def forward(self, bottom, top): top[0].data[...] = bottom[0].data\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "untrusted_module", raising=False)
    yield tmp_path
    sys.modules.pop("untrusted_module", None)
    caffelite.set_allow_python_layers(True)


def _param():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def test_refused_for_one_net_in_any_phase(untrusted_module):
    with pytest.raises(
        CaffeliteError,
        match=r"^net 'untrusted': layer 'evil' is a Python layer "
        r"\(module 'untrusted_module', class 'Layer'\), and Python layers are "
        r"refused here \(allow_python_layers=False\)",
    ):
        Net(_param(), caffelite.TEST, allow_python_layers=False)  # even if TRAIN-only
    assert "untrusted_module" not in sys.modules
    Net(_param(), caffelite.TRAIN)  # allowed by default
    assert sys.modules["untrusted_module"].RAN


def test_refused_everywhere_by_the_global_setting(untrusted_module, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    caffelite.set_allow_python_layers(False)
    with pytest.raises(CaffeliteError, match=rf"^{path}: layer 'evil' is a Python layer"):
        Net(str(path), caffelite.TRAIN)
    Net(str(path), caffelite.TRAIN, allow_python_layers=True)  # the argument wins


def test_command_line_flag(untrusted_module, tmp_path, capsys):
    from caffelite.cli import main

    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    assert main(["time", "--model", str(path), "--iterations", "1", "--no_python_layers"]) == 1
    assert "layer 'evil' is a Python layer" in capsys.readouterr().err
    assert "untrusted_module" not in sys.modules
