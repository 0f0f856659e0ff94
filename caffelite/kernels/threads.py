"""One thread count for BLAS and the compiled kernels, so the two never oversubscribe.

GEMMs and kernels run one after the other, so they can share the cores; what must
not happen is the kernels starting more threads than BLAS was allowed (numba's
default is one per core, whatever ``OMP_NUM_THREADS`` says). The count is the first
of ``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` that is set, else the number of cores; it never exceeds the
cores this process may use.
"""

from __future__ import annotations

import os

_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_count(environ=os.environ) -> int:
    """The thread count the environment asks for (see module doc)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for name in _VARIABLES:
        value = environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), cores or 1)
    return cores or 1


def configure_threads() -> int:
    """Give numba's parallel loops :func:`thread_count` threads; returns the count."""
    import numba

    count = min(thread_count(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(count)
    return count
