"""``caffelite train`` under an MPI launcher: one rank of a data-parallel job.

``DataParallelJob.from_environment()`` is None for a plain run. Under ``mpirun -np N``
(N > 1) it joins the MPI world before the solver is built (its data layers deal the
records by rank), quiets every rank's INFO log but rank 0's (Caffe's
``LOG_IF(INFO, Caffe::root_solver())``), and has rank 0 log which process and host
each rank is, so that a launcher's report of a dead pid names the rank. ``attach``
then hangs the gradient all-reduce on the solver and makes the signals job-wide.
"""

from __future__ import annotations

import logging
import os

from caffelite.parallel import mpi

logger = logging.getLogger("caffelite")


class DataParallelJob:
    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        #: This rank's place among the job's ranks on its host (which GPU of a list it takes).
        host = comm.Split_type(mpi.require_mpi().COMM_TYPE_SHARED)
        self.local_rank = host.Get_rank()
        host.Free()
        self.reducer: mpi.MPIGradientReducer | None = None

    @classmethod
    def from_environment(cls) -> DataParallelJob | None:
        if not mpi.launched_by_mpi():
            return None
        comm = mpi.join_world()
        if comm.Get_size() == 1:
            return None
        job = cls(comm)
        if job.rank != 0:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        places = comm.gather((os.getpid(), mpi.require_mpi().Get_processor_name()), root=0)
        if job.rank == 0:
            for rank, (pid, host) in enumerate(places):
                logger.info("Rank %d of %d: pid %d on %s", rank, job.size, pid, host)
        return job

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def attach(self, solver, local_action=None):
        """Reduce ``solver``'s gradients across the job; the solver's action function
        (``local_action``'s requests, e.g. signals, combined over every rank)."""
        self.reducer = mpi.MPIGradientReducer(solver, self.comm)
        return self.reducer.job_action_function(local_action)
