"""A NaN or infinite loss stops training, naming the iteration and the first layer
where values went non-finite, and leaves the last good snapshot untouched."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import solver_nets as sn

from caffelite.diagnose import NonFiniteLossError, first_non_finite
from caffelite.solvers import SGDSolver

# numpy warns about the very NaNs and overflows these tests make on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

SCALED_NET = f"""
    name: "Scaled"
    layer {{ name: "data" type: "MemoryData" top: "data" top: "targets"
             memory_data_param {{ batch_size: {sn.N} channels: {sn.D} height: 1 width: 1 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
             inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" }} }} }}
    layer {{ name: "scale" type: "Python" bottom: "ip" top: "scaled"
             python_param {{ module: "pylayers" layer: "ScaleByParam" param_str: "FACTOR" }} }}
    layer {{ name: "loss" type: "EuclideanLoss" bottom: "scaled" bottom: "targets" top: "loss" }}
"""


def _solver(text: str = "", factor: str = "1", prefix=None):
    extra = f" snapshot_prefix: '{prefix}/lsq' snapshot: 1" if prefix else ""
    return sn.make_solver(SGDSolver, text + extra, net=SCALED_NET.replace("FACTOR", factor))


def test_the_first_layer_with_a_non_finite_output_is_named():
    solver = _solver(factor="nan")
    with pytest.raises(NonFiniteLossError) as info:
        solver.step(3)
    error = info.value
    assert (error.iteration, error.layer) == (0, "scale")
    assert str(error).startswith(
        "iteration 0: the training loss is nan; the first non-finite values are in layer "
        "'scale' (type Python): its output (top blob 'scaled') holds NaN. Training stopped; "
        "no snapshot was written."
    )
    assert solver.iter == 0  # no update was applied


def test_non_finite_weights_are_named_before_outputs():
    solver = _solver()
    solver.step(2)
    solver.net.params["ip"][0].data[0, 1] = np.inf
    with pytest.raises(
        NonFiniteLossError,
        match=r"^iteration 2: the training loss is (nan|inf);"
        r" .* layer 'ip' \(type InnerProduct\): its parameter blob 0 holds inf",
    ):
        solver.step(1)


def test_divergence_stops_and_keeps_the_last_good_snapshot(tmp_path):
    solver = _solver("base_lr: 1e15", prefix=tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        solver.step(50)
    stopped = info.value.iteration
    assert stopped >= 1 and info.value.layer is not None
    assert f"the last snapshot (iteration {stopped}) is left as it was" in str(info.value)
    weights = tmp_path / f"lsq_iter_{stopped}.caffemodel"
    assert weights.exists() and not (tmp_path / f"lsq_iter_{stopped + 1}.caffemodel").exists()
    from caffelite.net import Net

    kept = Net(sn.solver_param(net=SCALED_NET.replace("FACTOR", "1")).net_param, 1)
    kept.copy_from(str(weights))
    assert all(np.isfinite(b.data).all() for b in kept.params["ip"])


def test_continue_keeps_caffes_behaviour(caplog):
    caplog.set_level(logging.WARNING, logger="caffelite")
    solver = _solver(factor="nan")
    solver.on_non_finite = "continue"
    solver.step(3)
    assert solver.iter == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith("iteration 0: the training loss is nan; the first non-finite")
    assert warnings[0].endswith("carrying on (on_non_finite = 'continue')")


def test_a_broken_backward_is_found_in_backward_order():
    solver = _solver()
    solver.net.forward_backward()
    assert first_non_finite(solver.net) == (
        None,
        "no blob holds a non-finite value (the loss overflowed when summed)",
    )
    solver.net.blobs["ip"].diff[0] = math.nan  # as if scale's backward had gone wrong
    layer, found = first_non_finite(solver.net)
    assert (layer, found) == ("scale", "the gradient it passes to 'ip' holds NaN")
