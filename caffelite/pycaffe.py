"""pycaffe's ``caffe.pycaffe`` module path: the Net and solver classes, NCCL and Timer.

Code written for pycaffe sometimes imports from here (``from caffe.pycaffe import
Net``); caffelite's classes already carry pycaffe's interface, so this module only
gathers them under that name.
"""

from caffelite.net import Net
from caffelite.parallel import NCCL
from caffelite.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
)
from caffelite.timer import Timer

__all__ = [
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "NCCL",
    "Net",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
    "Timer",
]
