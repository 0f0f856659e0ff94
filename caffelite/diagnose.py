"""Stopping a run whose loss went NaN or infinite, with the layer where it started.

Caffe carries on with a NaN loss: every later iteration is NaN and every later
snapshot overwrites good weights with NaNs. Here the solver checks the one loss
scalar per iteration (``math.isfinite``: nanoseconds against milliseconds of
forward and backward) and only when that trips looks through the net, which still
holds the values of the pass that went wrong:

* in forward order, the first layer whose parameters or outputs hold a
  non-finite value -- where the forward pass broke;
* failing that, the first layer in backward order whose bottom or parameter
  gradients do -- where the backward pass broke.

``Solver.on_non_finite`` is ``"stop"`` (raise NonFiniteLossError, write no
snapshot, so the last good one stays as it was) or ``"continue"`` (Caffe's
behaviour: log a warning and go on).
"""

from __future__ import annotations

import logging

from caffelite import backend
from caffelite.errors import CaffeliteError

logger = logging.getLogger("caffelite")

STOP = "stop"
CONTINUE = "continue"
CHOICES = (STOP, CONTINUE)


class NonFiniteLossError(CaffeliteError):
    """The training loss became NaN or infinite; ``iteration`` and ``layer`` say where."""

    def __init__(self, message: str, iteration: int, layer: str | None):
        super().__init__(message)
        self.iteration = iteration
        self.layer = layer


def _bad(array) -> str | None:
    """ "NaN", "inf" or None for an array (host or device)."""
    xp = backend.get_array_module(array)
    if bool(xp.isnan(array).any()):
        return "NaN"
    if bool(xp.isinf(array).any()):
        return "inf"
    return None


def first_non_finite(net) -> tuple[str | None, str]:
    """(layer name, what was found) for the first place ``net`` holds a non-finite value."""
    for layer_id, layer in enumerate(net.layers):
        for index, blob in enumerate(layer.blobs):
            kind = _bad(blob.data)
            if kind:
                return layer.name, f"its parameter blob {index} holds {kind}"
        for name, blob in zip(net.param.layer[layer_id].top, net.top_vecs[layer_id], strict=True):
            kind = _bad(blob.data)
            if kind:
                return layer.name, f"its output (top blob {name!r}) holds {kind}"
    for layer_id in reversed(range(len(net.layers))):
        layer = net.layers[layer_id]
        if not net.layer_need_backward[layer_id]:
            continue
        for index, blob in enumerate(layer.blobs):
            kind = _bad(blob.diff) if blob.has_diff else None
            if kind:
                return layer.name, f"the gradient of its parameter blob {index} holds {kind}"
        bottoms = zip(
            net.param.layer[layer_id].bottom,
            net.bottom_vecs[layer_id],
            net.bottom_need_backward[layer_id],
            strict=True,
        )
        for name, blob, needed in bottoms:
            kind = _bad(blob.diff) if needed and blob.has_diff else None
            if kind:
                return layer.name, f"the gradient it passes to {name!r} holds {kind}"
    return None, "no blob holds a non-finite value (the loss overflowed when summed)"


def on_non_finite_loss(solver, loss: float) -> None:
    """Called by the solver when the iteration's loss is not finite."""
    net = solver.net
    layer_name, found = first_non_finite(net)
    where = (
        f"the first non-finite values are in layer {layer_name!r} "
        f"(type {net.layer_dict[layer_name].type}): {found}"
        if layer_name is not None
        else found
    )
    head = f"iteration {solver.iter}: the training loss is {loss}; {where}"
    if solver.on_non_finite == CONTINUE:
        logger.warning("%s; carrying on (on_non_finite = 'continue')", head)
        return
    last = solver._last_snapshot_iter
    kept = (
        f"the last snapshot (iteration {last}) is left as it was"
        if last is not None
        else "no snapshot was written"
    )
    raise NonFiniteLossError(
        f"{head}. Training stopped; {kept}. Lower base_lr, clip gradients (clip_gradients), "
        "or check the data; to carry on regardless, as Caffe does, set "
        "solver.on_non_finite = 'continue' (caffelite train --on_nonfinite continue)",
        solver.iter,
        layer_name,
    )
