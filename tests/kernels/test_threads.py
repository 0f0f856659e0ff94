"""Thread settings: the kernels take BLAS's thread count from the environment."""

import os
import subprocess
import sys

import numpy
import pytest

from caffelite.kernels.threads import thread_count

CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, CORES),
        ({"OMP_NUM_THREADS": "1"}, 1),
        ({"OPENBLAS_NUM_THREADS": "1"}, 1),
        ({"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": str(CORES)}, 1),
        ({"OMP_NUM_THREADS": "1,2"}, 1),  # OpenMP's nested list: the outer level counts
        ({"OMP_NUM_THREADS": "999"}, CORES),  # never more than the cores we may use
        ({"OMP_NUM_THREADS": "junk", "MKL_NUM_THREADS": "1"}, 1),
    ],
)
def test_thread_count_follows_the_blas_variables(environ, expected):
    assert thread_count(environ) == expected


def test_kernels_run_on_omp_num_threads():
    code = (
        "import numpy, numba; from caffelite import kernels; "
        "x = numpy.ones((1, 1, 2, 2), numpy.float32); y = numpy.empty((1, 1, 1, 1), x.dtype); "
        "kernels.ave_pool_forward(x, y, (2, 2), (2, 2), (0, 0)); print(numba.get_num_threads())"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("NUMBA_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_import_caffelite_does_not_load_numba():
    """The kernels (and numba, ~0.5 s to import) load on first use, not with caffelite."""
    code = "import sys, caffelite; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_idle_threads_sleep_unless_the_user_chose():
    from caffelite.kernels.threads import release_idle_threads

    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    release_idle_threads(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def test_import_caffelite_sets_the_idle_policy_before_numpy_loads():
    # a finder that notes the policy at the moment numpy is first imported
    code = (
        "import os, sys\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy' and not hasattr(self, 'seen'):\n"
        "            self.seen = (os.environ.get('OMP_WAIT_POLICY'),\n"
        "                         os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
        "spy = Spy(); sys.meta_path.insert(0, spy)\n"
        "import caffelite\n"
        "print(spy.seen)\n"
    )
    unset = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('PASSIVE', '4')"


@pytest.mark.skipif(CORES < 2, reason="needs two cores to see a second thread")
def test_small_loops_run_on_the_calling_thread_and_large_ones_on_all():
    """Waking the OpenMP team costs more than a small loop (threads.SERIAL_BELOW_BYTES)."""
    numba = pytest.importorskip("numba")
    from caffelite.kernels import threads

    @numba.njit(parallel=True)
    def who_ran(ids):
        for i in numba.prange(ids.size):
            ids[i] = numba.get_thread_id()

    launch = threads.parallel_when_large(who_ran)
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        small = numpy.full(threads.SERIAL_BELOW_BYTES // 8 - 1, -1, dtype=numpy.int64)
        launch(small)
        assert set(numpy.unique(small)) == {0}
        assert numba.get_num_threads() == 2  # restored after the serial call
        large = numpy.full(threads.SERIAL_BELOW_BYTES // 8, -1, dtype=numpy.int64)
        launch(large)
        assert set(numpy.unique(large)) == {0, 1}
    finally:
        numba.set_num_threads(before)
