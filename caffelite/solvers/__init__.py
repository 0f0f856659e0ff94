"""The update rules: each module registers its Solver subclasses by ``type`` name."""

from caffelite.solvers.adadelta import AdaDeltaSolver
from caffelite.solvers.adagrad import AdaGradSolver
from caffelite.solvers.adam import AdamSolver
from caffelite.solvers.rmsprop import RMSPropSolver
from caffelite.solvers.sgd import NesterovSolver, SGDSolver

__all__ = [
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
]
