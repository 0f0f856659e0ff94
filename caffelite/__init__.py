"""caffelite: Caffe's model in plain Python (``import caffelite as caffe``).

The names here are pycaffe's, so existing pycaffe code runs unchanged.
"""

# ruff: noqa: E402 (the idle-thread policy must be set before numpy is imported)
from caffelite.kernels.threads import release_idle_threads

release_idle_threads()  # before numpy loads OpenBLAS: see caffelite.kernels.threads

from caffelite import io, layers
from caffelite.backend import set_device, set_mode_cpu, set_mode_gpu
from caffelite.blob import Blob
from caffelite.classifier import Classifier
from caffelite.detector import Detector
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN, Layer, layer_type_list, register_layer
from caffelite.limits import set_memory_limit
from caffelite.logging_setup import init_log, log
from caffelite.net import Net
from caffelite.net_spec import NetSpec, params, to_proto
from caffelite.parallel import (
    NCCL,
    has_nccl,
    set_multiprocess,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from caffelite.rng import set_random_seed
from caffelite.solver import Solver, get_solver
from caffelite.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
)
from caffelite.timer import Timer
from caffelite.trust import set_allow_python_layers

__version__ = "0.1.0"

__all__ = [
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "Blob",
    "CaffeliteError",
    "Classifier",
    "Detector",
    "Layer",
    "NCCL",
    "Net",
    "NetSpec",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
    "Solver",
    "TEST",
    "TRAIN",
    "Timer",
    "get_solver",
    "has_nccl",
    "init_log",
    "io",
    "layer_type_list",
    "layers",
    "log",
    "params",
    "register_layer",
    "set_allow_python_layers",
    "set_device",
    "set_memory_limit",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_multiprocess",
    "set_random_seed",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
    "to_proto",
]
