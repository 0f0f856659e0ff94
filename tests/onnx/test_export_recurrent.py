"""RNN, LSTM and LSTMUnit exported as their unrolled nets, against ONNX Runtime.

Sequences restart mid-batch (``cont`` holds zeros after the first step), so the flush
that ONNX's own RNN/LSTM ops cannot express is exercised; T x N shapes are fixed by the
unrolling, so batch 1 and batch 4 are two exports of the same layers and weights.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_cases import net_from_snippet, randomize  # noqa: E402

from caffelite.onnx import export  # noqa: E402
from caffelite.onnx.verify import relative_error, run_both, runtime_session  # noqa: E402

T, D, H = 5, 3, 4
FILLERS = 'weight_filler { type: "uniform" min: -0.5 max: 0.5 } ' + (
    'bias_filler { type: "uniform" min: -0.5 max: 0.5 }'
)


def recurrent(kind: str, extra_bottoms=(), extra_tops=(), expose=False) -> str:
    bottoms = " ".join(f'bottom: "{b}"' for b in ("x", "cont", *extra_bottoms))
    tops = " ".join(f'top: "{t}"' for t in ("y", *extra_tops))
    hidden = "expose_hidden: true" if expose else ""
    return (
        f'layer {{ name: "rec" type: "{kind}" {bottoms} {tops} '
        f"recurrent_param {{ num_output: {H} {FILLERS} {hidden} }} }}"
    )


def cont_pattern(n: int) -> np.ndarray:
    """Every stream starts at t = 0; stream j restarts at t = 2 + j % 3 as well."""
    cont = np.ones((T, n), np.float32)
    cont[0] = 0
    for j in range(n):
        cont[2 + j % 3, j] = 0
    return cont


CASES = {
    "rnn": (recurrent("RNN"), {}),
    "lstm": (recurrent("LSTM"), {}),
    "rnn_static": (recurrent("RNN", ["s"]), {"s": 2}),
    "lstm_static": (recurrent("LSTM", ["s"]), {"s": 2}),
    "rnn_expose_hidden": (recurrent("RNN", ["h0"], ["hT"], expose=True), {"h0": H}),
    "lstm_expose_hidden": (
        recurrent("LSTM", ["h0", "c0"], ["hT", "cT"], expose=True),
        {"h0": H, "c0": H},
    ),
}


def shapes(extra: dict, n: int) -> dict:
    result = {"x": (T, n, D), "cont": (T, n)}
    for name, width in extra.items():
        result[name] = (n, width) if name == "s" else (1, n, width)
    return result


def inputs_for(net, n: int, rng) -> dict:
    values = {}
    for name in net.inputs:
        shape = net.blobs[name].shape
        values[name] = cont_pattern(n) if name == "cont" else rng.standard_normal(shape)
    return values


def assert_exports_exactly(net, rng, tolerance=1e-4) -> list[float]:
    model = export(net)
    session = runtime_session(model)
    errors = []
    for name, ours, theirs in run_both(
        net, session, inputs_for(net, net.blobs["cont"].shape[1], rng)
    ):
        error = relative_error(ours, theirs)
        assert error <= tolerance, (name, error)
        errors.append(error)
    return errors


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("case", CASES)
def test_recurrent_layer_matches_runtime(case, batch):
    snippet, extra = CASES[case]
    rng = np.random.default_rng(0)
    net = net_from_snippet(snippet, shapes(extra, batch))
    randomize(net, rng)
    errors = assert_exports_exactly(net, rng)
    print(case, batch, "max relative error", max(errors))


def test_the_cont_flush_matters():
    """The same inputs with cont all ones give other outputs: the comparison above would
    fail for an export that ignored cont."""
    rng = np.random.default_rng(1)
    net = net_from_snippet(recurrent("LSTM"), shapes({}, 2))
    randomize(net, rng)
    x = rng.standard_normal((T, 2, D))
    flushed = net.forward(x=x, cont=cont_pattern(2))["y"].copy()
    net.layers[-1].reset()
    carried = net.forward(x=x, cont=np.ones((T, 2)) * (np.arange(T) > 0)[:, None])["y"]
    assert np.abs(flushed[3:] - carried[3:]).max() > 1e-3


def test_lstm_unit_matches_runtime():
    rng = np.random.default_rng(2)
    snippet = (
        'layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" '
        'bottom: "cont" top: "c" top: "h" }'
    )
    net = net_from_snippet(snippet, {"c_prev": (1, 3, H), "gates": (1, 3, 4 * H), "cont": (1, 3)})
    session = runtime_session(export(net))
    values = {
        "c_prev": rng.standard_normal((1, 3, H)),
        "gates": rng.standard_normal((1, 3, 4 * H)),
        "cont": np.array([[1.0, 0.0, 1.0]]),
    }
    for name, ours, theirs in run_both(net, session, values):
        assert relative_error(ours, theirs) <= 1e-6, name


LRCN_DEPLOY = """
layer { name: "conv1" type: "Convolution" bottom: "frames" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6"
  inner_product_param { num_output: 8 } }
layer { name: "reshape-fc6" type: "Reshape" bottom: "fc6" top: "fc6-reshape"
  reshape_param { shape { dim: 5 dim: 2 dim: 8 } } }
layer { name: "lstm1" type: "LSTM" bottom: "fc6-reshape" bottom: "cont" top: "lstm1"
  recurrent_param { num_output: 6 } }
layer { name: "fc8" type: "InnerProduct" bottom: "lstm1" top: "fc8"
  inner_product_param { num_output: 3 axis: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" softmax_param { axis: 2 } }
"""


def test_lrcn_shaped_deploy_net_matches_runtime():
    """An LSTM over per-frame CNN features (Caffe's LRCN): 5 steps x 2 streams of 8x8 frames."""
    rng = np.random.default_rng(3)
    net = net_from_snippet(LRCN_DEPLOY, {"frames": (10, 1, 8, 8), "cont": (T, 2)})
    randomize(net, rng)
    session = runtime_session(export(net))
    values = {"frames": rng.standard_normal((10, 1, 8, 8)), "cont": cont_pattern(2)}
    for name, ours, theirs in run_both(net, session, values):
        assert relative_error(ours, theirs) <= 1e-4, name


# ---- importing the unrolled graph back --------------------------------------------------
def test_exposed_state_lstm_imports_back_as_elementary_layers():
    """The unrolled graph re-imports as the InnerProduct/Scale/Eltwise/... layers it is made
    of, with bitwise-equal outputs. (The final hidden state ``hT``, which the last steps
    also read, is no output of the imported net: Caffe's outputs are unconsumed blobs.)"""
    from test_import import imported_net, outputs

    rng = np.random.default_rng(4)
    net = net_from_snippet(*_exposed_lstm())
    randomize(net, rng)
    back = imported_net(export(net), 2)
    assert "LSTM" not in {layer.type for layer in back.layers}
    values = inputs_for(net, 2, rng)
    ours, theirs = outputs(net, values), outputs(back, values)
    assert {"y", "cT"} <= set(theirs) <= set(ours)
    for name in theirs:
        np.testing.assert_array_equal(theirs[name], ours[name])


def _exposed_lstm():
    snippet, extra = CASES["lstm_expose_hidden"]
    return snippet, shapes(extra, 2)


def test_zero_initial_state_import_names_the_first_node_it_cannot_express():
    from caffelite.errors import CaffeliteError
    from caffelite.onnx import import_onnx

    net = net_from_snippet(recurrent("LSTM"), shapes({}, 2))
    with pytest.raises(CaffeliteError, match=r"ONNX node #\d+ 'rec_h_conted_0/Mul' \(Mul\)"):
        import_onnx(export(net), 2)
