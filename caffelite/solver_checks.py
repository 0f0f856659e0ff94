"""Range checks of a SolverParameter's numbers, before any net is built.

Caffe trusts these fields: a ``base_lr: nan`` trains a net of NaNs without a word,
``max_iter: -1`` trains nothing and ``display: -5`` is an error only in the log's
arithmetic. Each count must be a sensible count and each rate a finite number;
the message names the field and the value.
"""

from __future__ import annotations

import math

from caffelite.errors import CaffeliteError

#: Counts that must be >= 0 (0 meaning "never" or "none" where Caffe says so).
_NON_NEGATIVE = ("max_iter", "display", "snapshot", "test_interval", "stepsize")
#: Real-valued fields that must be finite numbers.
_FINITE = (
    "base_lr",
    "momentum",
    "momentum2",
    "weight_decay",
    "gamma",
    "power",
    "delta",
    "rms_decay",
    "clip_gradients",
)


def check_solver_numbers(param, source: str = "solver") -> None:
    """Raise CaffeliteError naming the first field out of its range."""

    def fail(field: str, value, need: str) -> None:
        raise CaffeliteError(f"{source}: {field} = {value} is out of range; it must be {need}")

    for field in _FINITE:
        value = getattr(param, field)
        if not math.isfinite(value):
            fail(field, value, "a finite number")
    for field in _NON_NEGATIVE:
        value = getattr(param, field)
        if value < 0:
            fail(field, value, ">= 0")
    for index, value in enumerate(param.test_iter):
        if value < 0:
            fail(f"test_iter[{index}]", value, ">= 0")
    for index, value in enumerate(param.stepvalue):
        if value < 0:
            fail(f"stepvalue[{index}]", value, ">= 0")
    if param.weight_decay < 0:
        fail("weight_decay", param.weight_decay, ">= 0")
