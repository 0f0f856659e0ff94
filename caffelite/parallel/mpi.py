"""Synchronous data-parallel training on MPI (mpi4py), as a solver callback.

Every rank builds the same solver; ``MPIGradientReducer(solver)`` attaches to it:

- at the first iteration, rank 0's weights, update history, iteration and lr step are
  broadcast (``bcast``), so every rank starts identical, restored or not;
- while backward runs, each gradient bucket (``buckets``) is packed and handed to a
  non-blocking all-reduce as soon as backward has finished it (Caffe's
  ``layer_wise_reduce``; off, every bucket starts once backward is done);
- in ``on_gradients_ready`` (after backward, before the update) the sums are
  awaited and every diff becomes the mean over ranks, so every rank applies the same
  update and the solver state stays identical without ever being sent again.

In GPU mode the buckets are packed on the device; NCCL (through CuPy, where it is
installed) sums them there, on the device's stream; without NCCL each bucket is staged
through host memory for MPI, one copy each way per bucket and iteration.

A small control vector rides along with the gradients: every rank's pending
SIGINT/SIGHUP request (so one signal, to any rank, stops or snapshots the whole job at
the same iteration) and its iteration number (ranks that drift apart are an error).
A rank that waits longer than ``timeout`` seconds for the others names the ranks that
have not reached this iteration and aborts the job (MPI_Abort), so a dead or hung rank
never leaves the others waiting forever; iterations that follow rank 0's tests and
periodic snapshots have no deadline, as those may take long.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from caffelite import parallel
from caffelite.errors import CaffeliteError
from caffelite.parallel import nccl
from caffelite.parallel.buckets import (
    BUCKET_BYTES,
    FIRST_BUCKET_BYTES,
    BucketSchedule,
    plan_buckets,
)
from caffelite.signal_handler import SolverAction, parse_action

logger = logging.getLogger("caffelite")

#: Seconds a rank waits for the others' gradients before it ends the job.
DEFAULT_TIMEOUT = 30.0
_POLL_SECONDS = 0.0002
#: Seconds an aborting rank gives the launcher to forward its last message: MPI_Abort
#: kills every process at once, and MPICH's hydra drops output still in its pipes.
_ABORT_GRACE_SECONDS = 1.0
_TOKEN_TAG = 7301


def require_mpi():
    """mpi4py's MPI module, or a clear error saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise CaffeliteError(
            'data-parallel training needs mpi4py and an MPI library: pip install -e ".[mpi]" '
            f"(installs both), or mpi4py against the system MPI ({exc})"
        ) from None
    return MPI


def launcher() -> str | None:
    """The MPI launcher to start a job with: the environment's own (the mpich wheel puts
    ``mpiexec`` beside the interpreter), else the first ``mpiexec`` on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpirun, mpiexec, srun...)."""
    names = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID")
    return any(name in os.environ for name in names)


def join_world(comm=None):
    """Take this process's rank and the job's size from MPI into ``caffelite.parallel``
    (before any solver is built: its data layers deal records by them); the comm."""
    MPI = require_mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    parallel.set_solver_rank(0)
    parallel.set_solver_count(comm.Get_size())
    parallel.set_solver_rank(comm.Get_rank())
    parallel.set_multiprocess(True)
    return comm


class MPIGradientReducer:
    """The all-reduce of one solver's gradients with the same solver on every rank."""

    def __init__(
        self,
        solver,
        comm=None,
        *,
        layer_wise: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        first_bucket_bytes: int = FIRST_BUCKET_BYTES,
        bucket_bytes: int = BUCKET_BYTES,
    ):
        self.MPI = require_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        if (parallel.solver_count(), parallel.solver_rank()) != (self.size, self.rank):
            raise CaffeliteError(
                f"this process is rank {self.rank} of {self.size} in MPI, but the solver was "
                f"built as rank {parallel.solver_rank()} of {parallel.solver_count()}: call "
                "caffelite.parallel.mpi.join_world() (or caffe.set_solver_count / "
                "set_solver_rank) before building the solver, so that its data layers deal "
                "the records among the ranks"
            )
        self.solver = solver
        self.timeout = float(timeout)
        self.layer_wise = solver.param.layer_wise_reduce if layer_wise is None else layer_wise
        self.buckets = plan_buckets(solver.net, first_bucket_bytes, bucket_bytes)
        self.schedule = BucketSchedule(
            self.buckets, solver.param.iter_size, self.layer_wise, self._start_bucket
        )
        #: GPU mode with NCCL: the buckets are summed on the device (None: through MPI,
        #: staged in host memory in GPU mode).
        self.device_reduce = self._device_all_reduce(solver.net.device)
        #: Seconds spent waiting for all-reduces after backward (the part not overlapped).
        self.wait_seconds = 0.0
        self.iterations = 0
        self._synced = False
        self._requests: list = []
        self._local_action = None
        self._job_action = SolverAction.NONE
        solver.add_callback(self)
        if self.layer_wise:
            solver.net.after_backward(self._on_layer_backward)
        logger.info(
            "Rank %d of %d: %d gradient bucket(s) of %s bytes, %s, %s",
            self.rank,
            self.size,
            len(self.buckets),
            "/".join(str(b.nbytes) for b in self.buckets),
            "reduced layer-wise during backward" if self.layer_wise else "reduced after backward",
            self._transport_name(),
        )

    def _device_all_reduce(self, device):
        """An NCCL communicator among the ranks where the net is on a CUDA device and
        NCCL is there (the uid travels by MPI); else None."""
        if device is None or not hasattr(device, "cuda") or not nccl.has_nccl():
            return None
        uid = self.comm.bcast(nccl.NCCL.new_uid() if self.rank == 0 else None, root=0)
        return nccl.DeviceAllReduce(self.size, self.rank, uid)

    def _transport_name(self) -> str:
        if self.device_reduce is not None:
            return "on the device by NCCL"
        if self.solver.net.device is not None:
            return "by MPI, staged in host memory"
        return "by MPI"

    # ---- the job-wide state ------------------------------------------------------------
    def bcast(self) -> None:
        """Make every rank's weights, history, iteration and lr step rank 0's (pycaffe's
        ``NCCL.bcast``). Collective: every rank calls it."""
        solver = self.solver
        for blob in [*solver.net.learnable_params, *solver.history]:
            self.comm.Bcast(blob.mutable_cpu_data(), root=0)  # a host view, synced
        counters = np.array([solver.iter, solver.current_step], dtype=np.int64)
        self.comm.Bcast(counters, root=0)
        solver.iter, solver.current_step = int(counters[0]), int(counters[1])
        self._synced = True

    def job_action_function(self, local):
        """The solver's action function for this job: ``local()`` (e.g. a SignalHandler's
        ``get_requested_action``) is asked on every rank each iteration and the requests
        are combined (stop wins over snapshot), so every rank acts at the same iteration."""
        self._local_action = local
        return self._requested_action

    def _requested_action(self) -> str:
        action, self._job_action = self._job_action, SolverAction.NONE
        return action

    # ---- the callback --------------------------------------------------------------------
    def on_start(self) -> None:
        if not self._synced:
            self.bcast()
        self.schedule.begin_step()
        self._requests = []

    def _on_layer_backward(self, layer_id: int) -> None:
        if self.schedule.after_layer_backward(layer_id) and self._requests:
            self.MPI.Request.Testall(self._requests)  # lets MPI progress the messages

    def _start_bucket(self, bucket) -> None:
        if self.device_reduce is not None:
            self.device_reduce.all_reduce(bucket.pack())  # queued on the device's stream
        else:
            host = bucket.pack_to_host()
            self._requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM))

    @property
    def _started(self) -> int:
        """How many buckets this step has handed to the all-reduce so far."""
        return self.schedule.started

    def on_gradients_ready(self) -> None:
        solver = self.solver
        self.schedule.start_ready(-1)
        local = parse_action(self._local_action()) if self._local_action else SolverAction.NONE
        control = np.array(
            [local == SolverAction.STOP, local == SolverAction.SNAPSHOT, solver.iter, -solver.iter],
            dtype=np.int64,
        )
        self._requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, control, op=self.MPI.MAX))
        started = time.perf_counter()
        self._wait(self._requests)
        if self.device_reduce is not None:
            self.device_reduce.synchronize()
        self.wait_seconds += time.perf_counter() - started
        self.iterations += 1
        self.schedule.end_step()
        scale = 1.0 / self.size
        for bucket in self.buckets:
            bucket.unpack(scale, from_host=self.device_reduce is None)
        if control[2] != -control[3]:
            self._abort(
                f"the ranks are at different iterations ({-control[3]} to {control[2]}); "
                "every rank must run the same solver and the same steps"
            )
        if control[0]:
            self._job_action = SolverAction.STOP
        elif control[1]:
            self._job_action = SolverAction.SNAPSHOT

    # ---- failures ------------------------------------------------------------------------
    def _root_was_busy(self) -> bool:
        """Whether rank 0 tested or snapshotted just before this iteration's reduction:
        the others wait for it then, however long that takes (no deadline)."""
        p, iteration = self.solver.param, self.solver.iter
        tested = bool(p.test_interval and len(p.test_iter)) and iteration % p.test_interval == 0
        tested = tested and (iteration > 0 or p.test_initialization)
        return tested or bool(p.snapshot and iteration and iteration % p.snapshot == 0)

    def _wait(self, requests) -> None:
        MPI = self.MPI
        timeout = float("inf") if self._root_was_busy() else self.timeout
        deadline = time.perf_counter() + timeout
        tokens = self._post_tokens()
        while not MPI.Request.Testall(requests):
            if time.perf_counter() > deadline:
                missing = self._missing_ranks(tokens)
                self._abort(
                    f"waited {self.timeout:g} s at iteration {self.solver.iter} for the "
                    f"gradients of rank(s) {missing}; they died or hang"
                )
            time.sleep(_POLL_SECONDS)
        MPI.Request.Waitall(tokens)

    def _post_tokens(self) -> list:
        """Each iteration, every rank tells rank 0 it has reached the reduction and rank 0
        tells every rank; after a timeout the tokens not received name who is missing."""
        self._token = np.array([self.solver.iter], dtype=np.int64)
        if self.rank == 0:
            self._token_in = [np.zeros(1, dtype=np.int64) for _ in range(self.size)]
            recvs = [
                self.comm.Irecv(self._token_in[r], source=r, tag=_TOKEN_TAG)
                for r in range(1, self.size)
            ]
            sends = [
                self.comm.Isend(self._token, dest=r, tag=_TOKEN_TAG + 1)
                for r in range(1, self.size)
            ]
            self._token_peers = list(range(1, self.size))
            return recvs + sends
        self._token_in = [np.zeros(1, dtype=np.int64)]
        self._token_peers = [0]
        return [
            self.comm.Irecv(self._token_in[0], source=0, tag=_TOKEN_TAG + 1),
            self.comm.Isend(self._token, dest=0, tag=_TOKEN_TAG),
        ]

    def _missing_ranks(self, tokens) -> str:
        missing = [
            str(peer)
            for peer, request in zip(self._token_peers, tokens, strict=False)
            if not request.Test()
        ]
        if not missing:
            return "unknown (all reached the reduction)"
        if self.rank != 0:
            return f"{', '.join(missing)} (rank 0 names the ranks it waits for)"
        return ", ".join(missing)

    def _abort(self, message: str) -> None:
        logger.error("rank %d of %d: %s; ending the job", self.rank, self.size, message)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(_ABORT_GRACE_SECONDS)
        self.comm.Abort(1)
