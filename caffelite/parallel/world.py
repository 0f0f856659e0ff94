"""This process's place in a data-parallel job (Caffe's ``Caffe::solver_count`` and
``Caffe::solver_rank``; pycaffe's ``caffe.set_solver_count`` and friends).

Process-wide, like Caffe's: set them before building a solver. Two things read them:
the data layers of TRAIN nets, which deal the records of their source round-robin
(rank r of N takes records r, r+N, r+2N, ...: Caffe's ``DataLayer::Skip``), and the
solver, which tests, displays and snapshots on rank 0 (the root solver) only.
"""

from __future__ import annotations

from caffelite.errors import CaffeliteError
from caffelite.layer import TEST

_count = 1
_rank = 0
_multiprocess = False


def solver_count() -> int:
    """How many solvers train together (1: a single process)."""
    return _count


def solver_rank() -> int:
    """This solver's index among them, 0 .. solver_count() - 1."""
    return _rank


def multiprocess() -> bool:
    """Whether the solvers are separate processes (pycaffe's train.py, mpirun)."""
    return _multiprocess


def root_solver() -> bool:
    """Rank 0: the one solver that tests, displays and writes snapshots."""
    return _rank == 0


def set_solver_count(count: int) -> None:
    global _count
    count = int(count)
    if count < 1:
        raise CaffeliteError(f"solver_count must be at least 1, got {count}")
    if _rank >= count:
        raise CaffeliteError(
            f"solver_count {count} leaves no place for this solver's rank {_rank}; "
            "set the rank first to a value below the count"
        )
    _count = count


def set_solver_rank(rank: int) -> None:
    global _rank
    rank = int(rank)
    if not 0 <= rank < _count:
        raise CaffeliteError(
            f"solver_rank must be in 0..{_count - 1} (solver_count is {_count}), got {rank}; "
            "set the count first"
        )
    _rank = rank


def set_multiprocess(value: bool) -> None:
    global _multiprocess
    _multiprocess = bool(value)


def record_share(phase: int) -> tuple[int, int]:
    """(first, stride): a data layer of ``phase`` reads records first, first+stride, ...

    TRAIN nets deal their source among the solvers; TEST nets run on the root solver
    only and read every record (Caffe's Skip keeps every record in TEST).
    """
    if phase == TEST:
        return 0, 1
    return _rank, _count
