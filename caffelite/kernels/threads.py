"""One thread count for BLAS and the compiled kernels, so the two never oversubscribe.

GEMMs and kernels run one after the other, so they can share the cores; what must
not happen is the kernels starting more threads than BLAS was allowed (numba's
default is one per core, whatever ``OMP_NUM_THREADS`` says). The count is the first
of ``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` that is set, else the number of cores; it never exceeds the
cores this process may use.

Sharing the cores also needs each pool to let go of them when its work is done. GNU
OpenMP (numba's ``omp`` threading layer) and OpenBLAS both keep their idle threads
spinning by default, so with two pools on two cores each one's spinning threads steal
the cores the other is computing on: measured on a 2-vCPU host, a LeNet training step
took 40-63 ms with 2 threads and 21 ms with 1. :func:`release_idle_threads` asks both
to sleep when idle (14-15 ms with 2 threads); a value the user set is kept.
"""

from __future__ import annotations

import functools
import os

#: idle threads sleep instead of spinning: GNU OpenMP's policy, OpenBLAS's wait (2^4 cycles)
_IDLE_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}

_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_count(environ=os.environ) -> int:
    """The thread count the environment asks for (see module doc)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for name in _VARIABLES:
        value = environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), cores or 1)
    return cores or 1


def release_idle_threads(environ=os.environ) -> None:
    """Set the idle-thread policy (see module doc) where the user has not set it.

    Each library reads it when it is loaded: OpenBLAS with numpy, so ``caffelite``
    calls this before importing numpy (it has no effect on an OpenBLAS that is already
    loaded), libgomp with the first compiled kernel.
    """
    for name, value in _IDLE_POLICY.items():
        environ.setdefault(name, value)


def configure_threads() -> int:
    """Give numba's parallel loops :func:`thread_count` threads; returns the count."""
    import numba

    count = min(thread_count(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(count)
    return count


#: A compiled loop given arrays of fewer bytes than this runs on the calling thread alone.
#: Each parallel loop first wakes the sleeping OpenMP team (the idle policy above), which
#: costs 50-90 us on a 2-vCPU host: a 1,000-value ReLU took 85 us on two threads and 12 us
#: on one. Two threads pay only once one thread would take about twice the wake. Measured
#: in one process, alternating (2 threads): GoogLeNet's forward at batch 8 0.94x the time
#: of always parallel (serial below 4 MiB: 0.93x; always serial: 1.09x), VGG-16's at batch 1
#: and ResNet-50's forward + backward at batch 8 unchanged (0.97-1.01x).
SERIAL_BELOW_BYTES = 1 << 20


def parallel_when_large(loop):
    """``loop`` (a numba parallel dispatcher), run on one thread when its arrays are small
    (see :data:`SERIAL_BELOW_BYTES`); the same compiled code either way."""
    import numba

    @functools.wraps(loop.py_func)
    def launch(*args):
        size = 0
        for arg in args:
            size += getattr(arg, "nbytes", 0)
        if size >= SERIAL_BELOW_BYTES:
            return loop(*args)
        threads = numba.get_num_threads()
        if threads == 1:
            return loop(*args)
        numba.set_num_threads(1)
        try:
            return loop(*args)
        finally:
            numba.set_num_threads(threads)

    return launch
