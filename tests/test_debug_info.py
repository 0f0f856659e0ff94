"""``debug_info: true`` logs Caffe's per-layer lines, in Caffe's wording and order, with
the mean absolute values of the blobs they name; only on display iterations."""

import logging
import math
import re

import numpy as np
from google.protobuf import text_format

from caffelite.logging_setup import caffe_number
from caffelite.proto import caffe_pb2
from caffelite.solver import get_solver

NET = """
name: "shared"
layer { name: "data" type: "DummyData" top: "x" top: "y"
        dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false
                              weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "out" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


def mean_abs(values) -> str:
    return caffe_number(np.abs(values).sum() / values.size)


def l2(values) -> float:
    return math.sqrt(float((values * values).sum()))


def solver(display: int):
    param = caffe_pb2.SolverParameter()
    text_format.Merge(
        f"base_lr: 1 lr_policy: 'fixed' display: {display} debug_info: true max_iter: 10 "
        "random_seed: 5 snapshot_after_train: false",
        param,
    )
    text_format.Merge(NET, param.net_param)
    return get_solver(param)


def debug_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("    [")]


def test_forward_backward_update_lines(caplog):
    s = solver(display=1)
    w_before = s.net.params["ip1"][0].data.copy()
    with caplog.at_level(logging.INFO, logger="caffelite"):
        s.step(1)
    lines = debug_lines(caplog)
    blobs, w = s.net.blobs, s.net.params["ip1"][0]
    expected = [
        f"    [Forward] Layer data, top blob x data: {mean_abs(blobs['x'].data)}",
        "    [Forward] Layer data, top blob y data: 0",
        f"    [Forward] Layer ip1, top blob h data: {mean_abs(blobs['h'].data)}",
        f"    [Forward] Layer ip1, param blob w data: {mean_abs(w_before)}",
        f"    [Forward] Layer ip2, top blob out data: {mean_abs(blobs['out'].data)}",
        f"    [Forward] Layer ip2, param blob w data: {mean_abs(w_before)}",
        f"    [Forward] Layer loss, top blob loss data: {mean_abs(blobs['loss'].data)}",
        f"    [Backward] Layer loss, bottom blob out diff: {mean_abs(blobs['out'].diff)}",
        f"    [Backward] Layer ip2, bottom blob h diff: {mean_abs(blobs['h'].diff)}",
    ]
    assert lines[: len(expected)] == expected
    rest = lines[len(expected) :]
    assert re.fullmatch(r"    \[Backward\] Layer ip2, param blob 0 diff: [0-9.e+-]+", rest[0])
    assert re.fullmatch(r"    \[Backward\] Layer ip1, param blob 0 diff: [0-9.e+-]+", rest[1])
    assert rest[2] == (
        f"    [Backward] All net params (data, diff): L1 norm = "
        f"({caffe_number(np.abs(w_before).sum())}, {caffe_number(np.abs(w.diff).sum())}); "
        f"L2 norm = ({caffe_number(l2(w_before))}, "
        f"{caffe_number(l2(w.diff))})"
    )
    # the shared blob first (naming its owner), then the owner; diff = the step taken
    assert rest[3:] == [
        f"    [Update] Layer ip2, param blob w (owned by layer ip1, param w) diff: "
        f"{mean_abs(w.diff)}",
        f"    [Update] Layer ip1, param w data: {mean_abs(w_before)}; diff: {mean_abs(w.diff)}",
    ]
    norms = [r for r in caplog.records if "All net params" in r.getMessage()]
    assert [r.levelname for r in norms] == ["ERROR"]  # Caffe's LOG(ERROR)


def test_only_on_display_iterations(caplog):
    s = solver(display=2)
    with caplog.at_level(logging.INFO, logger="caffelite"):
        s.step(1)
        first = len(debug_lines(caplog))
        s.step(1)  # iteration 1: no display, no debug lines
    assert first == 14  # 7 forward, 4 backward, the norms, 2 update
    assert len(debug_lines(caplog)) == first
