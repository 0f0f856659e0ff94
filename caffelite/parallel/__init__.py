"""Data-parallel training: one solver per process, gradients all-reduced between them.

The Net and its layers know nothing of processes. This package holds the process's
place in the job (``world``: pycaffe's ``solver_count`` / ``solver_rank``, which the
data layers read to deal records round-robin and the solver reads so that rank 0
alone tests and snapshots), the NCCL names pycaffe code looks for (``nccl``), and
the MPI gradient all-reduce that is attached to a solver as a callback (``mpi``).
"""

from caffelite.parallel.nccl import NCCL, has_nccl
from caffelite.parallel.world import (
    multiprocess,
    record_share,
    root_solver,
    set_multiprocess,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)

__all__ = [
    "NCCL",
    "has_nccl",
    "multiprocess",
    "record_share",
    "root_solver",
    "set_multiprocess",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
]
