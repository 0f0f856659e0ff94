"""A fixture that places this process in a pretend data-parallel job, then restores it."""

import pytest

from caffelite import parallel


@pytest.fixture
def as_solver():
    """``as_solver(rank, count)``: set pycaffe's solver rank and count for this test."""

    def place(rank: int, count: int) -> None:
        parallel.set_solver_rank(0)
        parallel.set_solver_count(count)
        parallel.set_solver_rank(rank)

    yield place
    parallel.set_solver_rank(0)
    parallel.set_solver_count(1)
    parallel.set_multiprocess(False)
