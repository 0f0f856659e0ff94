"""pycaffe's solver count and rank: their checks, and what they change (data dealing,
the root solver alone testing and snapshotting)."""

from __future__ import annotations

import pytest
import solver_nets as sn

import caffelite as caffe
from caffelite import parallel
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN


def test_a_single_process_is_rank_0_of_1():
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    assert parallel.root_solver() and not parallel.multiprocess()


def test_rank_and_count_are_checked_against_each_other(as_solver):
    as_solver(2, 4)
    assert (caffe.solver_count(), caffe.solver_rank()) == (4, 2)
    assert not parallel.root_solver()
    with pytest.raises(CaffeliteError, match="solver_rank must be in 0..3"):
        caffe.set_solver_rank(4)
    with pytest.raises(CaffeliteError, match="no place for this solver's rank 2"):
        caffe.set_solver_count(2)
    with pytest.raises(CaffeliteError, match="at least 1"):
        caffe.set_solver_count(0)
    caffe.set_multiprocess(True)
    assert parallel.multiprocess()


def test_train_nets_deal_records_and_test_nets_read_all(as_solver):
    as_solver(1, 3)
    assert parallel.record_share(TRAIN) == (1, 3)
    assert parallel.record_share(TEST) == (0, 1)


def test_only_the_root_solver_tests_and_snapshots(tmp_path, as_solver):
    text = (
        f'snapshot: 2 snapshot_prefix: "{tmp_path}/rank" test_iter: 1 test_interval: 1 '
        "test_initialization: true"
    )
    for rank in (1, 0):
        as_solver(rank, 2)
        param = sn.solver_param(text)
        param.test_net_param.add().CopyFrom(param.net_param)
        solver = caffe.SGDSolver(param)
        sn.feed(solver)
        solver.step(2)
        written = sorted(p.name for p in tmp_path.iterdir())
        if rank == 1:
            assert written == [] and solver.test_results == [{}]
        else:
            assert written == ["rank_iter_2.caffemodel", "rank_iter_2.solverstate"]
            assert "loss" in solver.test_results[0]
