"""A SolverParameter's numbers out of range are refused before any net is built."""

import pytest
import solver_nets as sn

from caffelite.errors import CaffeliteError
from caffelite.solvers import SGDSolver


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base_lr: nan", "base_lr = nan is out of range; it must be a finite number"),
        ("momentum: inf", "momentum = inf is out of range; it must be a finite number"),
        ("weight_decay: -1", "weight_decay = -1.0 is out of range; it must be >= 0"),
        ("clip_gradients: nan", "clip_gradients = nan"),
        ("max_iter: -1", "max_iter = -1 is out of range; it must be >= 0"),
        ("display: -5", "display = -5"),
        ("snapshot: -1", "snapshot = -1"),
        ("test_iter: -1 test_interval: 1", r"test_iter\[0\] = -1"),
        ("lr_policy: 'multistep' stepvalue: 5 stepvalue: -2", r"stepvalue\[1\] = -2"),
    ],
)
def test_out_of_range_fields_are_named(text, message):
    with pytest.raises(CaffeliteError, match=r"^solver: " + message):
        SGDSolver(sn.solver_param(text))


def test_the_solver_file_is_named(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{tmp_path}/none.prototxt" base_lr: inf')
    with pytest.raises(CaffeliteError, match=rf"^{path}: base_lr = inf"):
        SGDSolver(str(path))


def test_in_range_fields_pass():
    solver = sn.make_solver(
        SGDSolver, "max_iter: 0 display: 0 weight_decay: 0 test_iter: 0 test_interval: 1"
    )
    assert solver.param.max_iter == 0
