"""MPIGradientReducer under mpiexec -n 2: the mean gradient over ranks, identical state on
every rank, buckets started during backward's last pass (layer_wise_reduce)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import solver_nets as sn

pytest.importorskip("mpi4py")
from mpi_job import mpiexec  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite import backend, fake_device  # noqa: E402

SCRIPT = Path(__file__).with_name("reducer_rank.py")


def run_ranks(tmp_path, mode: str):
    if mpiexec() is None:  # pragma: no cover - the mpi extra installs one
        pytest.skip("no mpiexec")
    done = subprocess.run(
        [mpiexec(), "-n", "2", sys.executable, str(SCRIPT), str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]


def one_process_on_all_samples():
    """The same 8 samples in one process at iter_size 2 of batch 4."""
    with backend.precision(np.float64):
        x, y = sn.problem()
        param = sn.solver_param("iter_size: 2 momentum: 0.9", batch_size=4)
        solver = caffe.SGDSolver(param)
        sn.feed(solver, np.concatenate([x, -x]), np.concatenate([y, 2 * y]))
        solver.step(5)
        return sn.ip_params(solver)


def one_gpu_process_copies():
    """(h2d, d2h) per step of one rank's solver in GPU mode on the fake device, alone."""
    with backend.precision(np.float64), backend.gpu_mode_on(fake_device):
        x, y = sn.problem()
        solver = caffe.SGDSolver(sn.solver_param("iter_size: 2 momentum: 0.9", batch_size=2))
        sn.feed(solver, x[:4], y[:4])
        copies = []
        for _ in range(5):
            fake_device.reset_transfers()
            solver.step(1)
            copies.append((fake_device.transfers["h2d"], fake_device.transfers["d2h"]))
        return np.array(copies)


def test_in_gpu_mode_each_bucket_crosses_to_the_host_and_back_once_per_iteration(tmp_path):
    """Two ranks in GPU mode on the fake device (no NCCL: MPI with host staging): the
    mean gradient as on the CPU, and per iteration exactly one copy of each bucket each
    way on top of what the same solver copies alone (the first step also broadcasts)."""
    ranks = run_ranks(tmp_path, "gpu")
    weights, bias = one_process_on_all_samples()
    alone = one_gpu_process_copies()
    for result in ranks:
        np.testing.assert_allclose(result["weights"], weights, rtol=1e-12, atol=1e-14)
        buckets = int(result["buckets"])
        assert buckets == 2
        extra = result["copies"][1:] - alone[1:]
        assert (extra == [[buckets, buckets]] * 4).all(), result["copies"]


@pytest.mark.parametrize("mode", ["layer_wise", "after_backward"])
def test_two_ranks_apply_the_mean_gradient_of_all_samples(tmp_path, mode):
    ranks = run_ranks(tmp_path, mode)
    weights, bias = one_process_on_all_samples()
    for result in ranks:
        np.testing.assert_allclose(result["weights"], weights, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(result["bias"], bias, rtol=1e-12, atol=1e-14)
    assert (ranks[0]["weights"] == ranks[1]["weights"]).all()  # bitwise: one state

    # (layer, buckets started) after each backward, in backward order: loss, ip, data.
    started = ranks[0]["started"].reshape(5, 2, 3, 2)  # iterations, passes, layers
    assert int(ranks[0]["buckets"]) == 2  # ip's weights and bias, one bucket each
    first_pass, last_pass = started[:, 0, :, 1], started[:, 1, :, 1]
    assert (first_pass == 0).all()  # diffs still accumulating: nothing sent
    if mode == "layer_wise":
        assert (last_pass == [[0, 2, 2]] * 5).all()  # both sent right after ip's backward
    else:
        assert (last_pass == 0).all()  # all sent in on_gradients_ready


def test_a_stalled_rank_ends_the_job_through_the_watchdog(tmp_path):
    """Rank 1 is alive but stuck (no launcher notices): rank 0 waits its timeout, names
    rank 1 and aborts the job, well before the stall would have ended."""
    if mpiexec() is None:  # pragma: no cover - the mpi extra installs one
        pytest.skip("no mpiexec")
    started = time.perf_counter()
    done = subprocess.run(
        [mpiexec(), "-n", "2", sys.executable, str(SCRIPT), str(tmp_path), "hang"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    elapsed = time.perf_counter() - started
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    message = "rank 0 of 2: waited 2 s at iteration 3 for the gradients of rank(s) 1"
    assert message in (tmp_path / "rank0.log").read_text()
    assert message in output  # forwarded by the launcher before the abort
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end"
    assert not list(tmp_path.glob("rank*.npz"))  # neither rank got past the stall


def test_a_solver_built_for_another_place_in_the_job_is_refused(as_solver):
    from mpi4py import MPI

    from caffelite.errors import CaffeliteError
    from caffelite.parallel.mpi import MPIGradientReducer

    as_solver(1, 2)
    solver = sn.make_solver(caffe.SGDSolver)
    with pytest.raises(CaffeliteError, match="rank 0 of 1 in MPI, but the solver was built as"):
        MPIGradientReducer(solver, MPI.COMM_SELF)


def test_no_deadline_while_rank_0_tests_or_snapshots(tmp_path):
    from mpi4py import MPI

    from caffelite.parallel.mpi import MPIGradientReducer

    param = sn.solver_param(
        f'test_interval: 10 snapshot: 4 test_initialization: false snapshot_prefix: "{tmp_path}/s"'
    )
    param.test_iter.append(1)
    param.test_net_param.add().CopyFrom(param.net_param)
    solver = caffe.SGDSolver(param)
    reducer = MPIGradientReducer(solver, MPI.COMM_SELF)
    busy = []
    for iteration in range(13):
        solver.iter = iteration
        busy.append(reducer._root_was_busy())
    assert [i for i, b in enumerate(busy) if b] == [4, 8, 10, 12]
