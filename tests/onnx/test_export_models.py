"""Every deploy net in models/ (random weights saved by caffelite) exported with
``caffelite export`` and run by ONNX Runtime at batch 1 and batch 4 from one file.

The ImageNet-size nets take minutes on two cores and are marked slow; LeNet and the
CIFAR-10 nets run in CI, and every layer type the big nets use is also checked on its own
in test_export_ops.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import REPO  # noqa: E402
from onnx_cases import assert_matches_runtime, randomize  # noqa: E402
from test_models import DEPLOY_NETS  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite.cli import main  # noqa: E402
from caffelite.net import load_net_param  # noqa: E402
from caffelite.prototxt import write_text  # noqa: E402

FAST = ["lenet/lenet.prototxt", "cifar10/cifar10_quick.prototxt", "cifar10/cifar10_full.prototxt"]
#: The big nets; FCN-32s (fully convolutional) at 64x64 instead of 500x500.
SLOW = {
    "bvlc_alexnet/deploy.prototxt": None,
    "bvlc_reference_caffenet/deploy.prototxt": None,
    "bvlc_googlenet/deploy.prototxt": None,
    "vgg16/deploy.prototxt": None,
    "resnet50/deploy.prototxt": None,
    "fcn32s/deploy.prototxt": (64, 64),
}


def test_every_deploy_net_is_covered():
    names = {str(p.relative_to(REPO / "models")) for p in DEPLOY_NETS}
    assert names == set(FAST) | set(SLOW)


def export_and_compare(tmp_path, relative: str, spatial=None) -> None:
    path = REPO / "models" / relative
    if spatial is not None:
        param = load_net_param(path)
        dims = param.layer[0].input_param.shape[0].dim
        dims[2], dims[3] = spatial
        path = tmp_path / "deploy.prototxt"
        write_text(path, param)
    net = caffe.Net(str(path), caffe.TEST)
    randomize(net, np.random.default_rng(0))
    weights, output = tmp_path / "w.caffemodel", tmp_path / "net.onnx"
    net.save(str(weights))
    del net
    argv = ["export", "--model", str(path), "--weights", str(weights), "--output", str(output)]
    assert main(argv) == 0
    assert_matches_runtime(caffe.Net(str(path), caffe.TEST, weights=str(weights)), str(output))


@pytest.mark.parametrize("relative", FAST)
def test_deploy_net(tmp_path, relative):
    export_and_compare(tmp_path, relative)


@pytest.mark.slow
@pytest.mark.parametrize("relative", sorted(SLOW))
def test_big_deploy_net(tmp_path, relative):
    export_and_compare(tmp_path, relative, SLOW[relative])
