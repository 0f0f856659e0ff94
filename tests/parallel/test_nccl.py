"""pycaffe's NCCL names: ``has_nccl()`` False without CuPy's NCCL and a GPU, and a clear
error then; with them (marked gpu), ``caffe.NCCL`` as python/train.py uses it."""

from __future__ import annotations

import numpy as np
import pytest
import solver_nets as sn
from conftest import cupy_device

import caffelite as caffe
from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.parallel import nccl


def test_without_nccl_has_nccl_is_false_and_nccl_says_what_to_use_instead():
    if caffe.has_nccl():  # pragma: no cover - a GPU machine with NCCL
        pytest.skip("NCCL is available here")
    assert caffe.has_nccl() is False
    with pytest.raises(CaffeliteError, match="NCCL is not available.*mpirun -np N caffelite"):
        caffe.NCCL.new_uid()
    solver = sn.make_solver(caffe.SGDSolver)
    with pytest.raises(CaffeliteError, match="has_nccl\\(\\) is False"):
        caffe.NCCL(solver, b"uid")


def test_pycaffe_code_that_checks_has_nccl_takes_its_single_process_path():
    """The shape of pycaffe scripts: NCCL only when has_nccl(), else train alone."""
    solver = sn.make_solver(caffe.SGDSolver)
    before = sn.ip_params(solver)[0]
    if caffe.has_nccl():  # pragma: no cover - a GPU machine with NCCL
        pytest.skip("NCCL is available here: the script would take its NCCL path")
    solver.step(3)
    assert caffe.solver_count() == 1 and solver.iter == 3
    assert (sn.ip_params(solver)[0] != before).all()


@pytest.mark.gpu
def test_nccl_of_one_process_trains_as_the_solver_alone():
    """python/train.py's calls with one process (one GPU can hold one NCCL rank): bcast,
    the callback and the after_backward hook leave the training as it is alone."""
    cupy = cupy_device()
    if not nccl.has_nccl():
        pytest.skip("CuPy finds no NCCL (pip install nvidia-nccl-cu13)")
    with backend.gpu_mode_on(cupy):
        alone = sn.make_solver(caffe.SGDSolver, "momentum: 0.9")
        alone.step(4)
        solver = sn.make_solver(caffe.SGDSolver, "momentum: 0.9 layer_wise_reduce: true")
        reducer = caffe.NCCL(solver, caffe.NCCL.new_uid())
        reducer.bcast()
        solver.add_callback(reducer)
        solver.net.after_backward(reducer)
        solver.step(4)
        for mine, theirs in zip(sn.ip_params(solver), sn.ip_params(alone), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
        assert reducer.schedule.started == len(reducer.buckets)
