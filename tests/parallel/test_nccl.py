"""pycaffe's NCCL names: present, reporting that NCCL is unavailable."""

from __future__ import annotations

import pytest
import solver_nets as sn

import caffelite as caffe
from caffelite.errors import CaffeliteError


def test_has_nccl_is_false_and_nccl_says_what_to_use_instead():
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
    if caffe.has_nccl():  # pragma: no cover - never here
        caffe.set_solver_count(2)
        solver.add_callback(caffe.NCCL(solver, caffe.NCCL.new_uid()))
    solver.step(3)
    assert caffe.solver_count() == 1 and solver.iter == 3
    assert (sn.ip_params(solver)[0] != before).all()
