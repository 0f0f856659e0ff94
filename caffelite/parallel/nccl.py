"""pycaffe's NCCL names: ``caffe.has_nccl()`` and ``caffe.NCCL``.

NCCL is the GPU all-reduce of Caffe's multi-GPU training; caffelite has no NCCL (the
GPU work is not done), so ``has_nccl()`` is False and pycaffe code that checks it
(``python/train.py`` style) takes its single-process path. Using ``NCCL`` anyway is
a clear error that points at the MPI path rather than a silent no-op, which would
let every process train alone on its share of the data.
"""

from __future__ import annotations

from caffelite.errors import CaffeliteError

_UNAVAILABLE = (
    "NCCL is not available in caffelite (caffe.has_nccl() is False). For data-parallel "
    "training across processes, run `mpirun -np N caffelite train --solver S.prototxt` "
    '(pip install -e ".[mpi]"), or attach caffelite.parallel.mpi.MPIGradientReducer '
    "to the solver in pycaffe code"
)


def has_nccl() -> bool:
    """Whether NCCL is available (pycaffe's ``caffe.has_nccl``): never, here."""
    return False


class NCCL:
    """pycaffe's ``caffe.NCCL(solver, uid)``: ``new_uid()``, ``bcast()``, and the
    callback passed to ``solver.add_callback``. Unavailable: every use says so."""

    def __init__(self, solver=None, uid=None):
        raise CaffeliteError(_UNAVAILABLE)

    @staticmethod
    def new_uid() -> bytes:
        """The NCCL session id to hand every process (pycaffe: bytes)."""
        raise CaffeliteError(_UNAVAILABLE)

    def bcast(self) -> None:  # pragma: no cover - no instance can exist
        """Copy rank 0's weights to every process."""
        raise CaffeliteError(_UNAVAILABLE)
