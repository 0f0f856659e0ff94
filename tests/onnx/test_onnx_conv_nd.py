"""1-D and 3-D Convolution / Deconvolution through ONNX (whose Conv and ConvTranspose are
N-d): the export against ONNX Runtime, and caffelite -> ONNX -> caffelite round trips."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_cases import assert_matches_runtime, net_from_snippet, randomize  # noqa: E402
from test_export_ops import one  # noqa: E402
from test_import import imported_net, round_trip_errors  # noqa: E402

from caffelite.onnx import export  # noqa: E402


def conv(kind: str, params: str, bottom="x", top="y", name="l") -> str:
    text = one(kind, f"convolution_param {{ {params} }}", bottoms=(bottom,), tops=(top,))
    return text.replace('name: "l"', f'name: "{name}"')


CASES = {
    "conv1d": (conv("Convolution", "num_output: 4 kernel_size: 3 pad: 1 stride: 2"), (2, 3, 11)),
    "conv1d_dilation_group": (
        conv("Convolution", "num_output: 4 kernel_size: 3 dilation: 2 group: 2 bias_term: false"),
        (2, 4, 12),
    ),
    "conv3d": (conv("Convolution", "num_output: 4 kernel_size: 3 pad: 1"), (2, 3, 4, 6, 6)),
    "conv3d_per_axis": (
        conv(
            "Convolution",
            "num_output: 6 kernel_size: 1 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 "
            "stride: 1 pad: 0 pad: 1 pad: 1 dilation: 1 dilation: 1 dilation: 2 group: 3",
        ),
        (2, 3, 4, 7, 6),
    ),
    "deconv1d": (conv("Deconvolution", "num_output: 2 kernel_size: 4 stride: 2 pad: 1"), (2, 3, 5)),
    "deconv3d": (
        conv("Deconvolution", "num_output: 4 kernel_size: 2 stride: 2 group: 2"),
        (2, 4, 2, 3, 3),
    ),
    "c3d_stack": (
        conv("Convolution", "num_output: 4 kernel_size: 3 pad: 1", top="c1", name="c1")
        + one("ReLU", bottoms=("c1",), tops=("c1",)).replace('name: "l"', 'name: "r1"')
        + conv("Convolution", "num_output: 6 kernel_size: 3 pad: 1 stride: 2", "c1", "c2", "c2")
        + one("InnerProduct", "inner_product_param { num_output: 5 }", bottoms=("c2",)),
        (2, 1, 4, 8, 8),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nd_convolution_export_matches_runtime(case):
    layers, shape = CASES[case]
    net = net_from_snippet(layers, {"x": shape})
    randomize(net, np.random.default_rng(0))
    assert_matches_runtime(net, export(net))


@pytest.mark.parametrize("case", sorted(CASES))
def test_nd_convolution_round_trip(case):
    layers, shape = CASES[case]
    net = net_from_snippet(layers, {"x": shape})
    randomize(net, np.random.default_rng(0))
    for name, batch, error in round_trip_errors(net):
        assert error == 0, f"{name} at batch {batch}: {error:.3g}"
    back = imported_net(export(net))
    kinds = ("Convolution", "Deconvolution")
    ours = [layer for layer in net.layers if layer.type in kinds]
    theirs = [layer for layer in back.layers if layer.type in kinds]
    assert [(a.type, a.geometry, a.group) for a in ours] == [
        (b.type, b.geometry, b.group) for b in theirs
    ]
