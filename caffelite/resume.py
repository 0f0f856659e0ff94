"""Exact resume: what a continued run needs beyond the weights and the update history.

Caffe's SolverState holds the iteration, the weights file, the update history and
the lr step. A run resumed from only that reads its data from the start again and
draws fresh random numbers, so it drifts from the run it continues. caffelite also
records, in the snapshot itself:

* the process-wide generator (``caffelite.rng``: the solver's seed stream, which
  Dropout masks, shuffles and ImageData crops and flips draw from);
* per net (the train net, then each test net) and per layer that reads a source or
  keeps a generator of its own, the state after the last batch the solver
  *consumed* -- for a prefetching layer that is not where its reader thread is.

The record is JSON in ``SolverState.caffelite_resume`` (field 100, which Caffe's
parser skips as an unknown field) or in a dataset of that name in an HDF5 state
(Caffe reads its datasets by name and ignores others). Keeping it inside the one
state file, rather than in a sidecar, means it is written in the same atomic write
and can never be paired with another snapshot's weights or iteration.

A layer takes part by implementing two methods (``Resumable``); layers without them
hold no such state. Layers are restored first and the generator last, so anything
a layer draws while repositioning itself (a file reload that reshuffles) is undone.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol, runtime_checkable

import numpy as np

from caffelite import rng
from caffelite.errors import CaffeliteError

logger = logging.getLogger("caffelite")

FORMAT_VERSION = 1


@runtime_checkable
class Resumable(Protocol):
    """A layer whose output depends on more than its parameters and its bottoms."""

    def resume_state(self) -> dict:
        """JSON-serialisable state after the last batch served by ``forward``."""

    def restore_resume_state(self, state: dict) -> None:
        """Continue as if the batches recorded in ``state`` had just been served."""


def capture(nets) -> bytes:
    """The resume record of ``nets`` (the train net first, then the test nets)."""
    record = {
        "version": FORMAT_VERSION,
        "rng": rng.get_state(),
        "nets": [_capture_net(net) for net in nets],
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _stateful_layers(net):
    """(index, name, type, layer) of each Resumable layer of ``net``."""
    for layer_id, layer in enumerate(net.layers):
        if isinstance(layer, Resumable):
            yield layer_id, layer.layer_param.name, layer.type, layer


def _capture_net(net) -> list:
    return [[i, name, kind, layer.resume_state()] for i, name, kind, layer in _stateful_layers(net)]


def restore(payload: bytes, nets, source: str) -> None:
    """Put ``nets`` and the generator back to the state ``capture`` recorded.

    ``payload`` empty (a solverstate written by Caffe) restores nothing, as Caffe.
    """
    nets = list(nets)
    if not payload:
        logger.info(
            "%s has no caffelite resume record (written by Caffe?): data layers start "
            "from their sources' beginning and random streams are not restored",
            source,
        )
        return
    try:
        record = json.loads(payload)
        version = record["version"]
        saved_nets = record["nets"]
        rng_state = record["rng"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CaffeliteError(f"{source}: unreadable caffelite resume record ({exc})") from None
    if version != FORMAT_VERSION:
        raise CaffeliteError(
            f"{source}: caffelite resume record version {version}; this caffelite reads "
            f"version {FORMAT_VERSION}"
        )
    if len(saved_nets) != len(nets):
        raise CaffeliteError(
            f"{source}: the resume record covers {len(saved_nets)} net(s) (train + test); "
            f"this solver has {len(nets)}"
        )
    for net_id, (net, layers) in enumerate(zip(nets, saved_nets, strict=True)):
        _restore_net(net, net_id, layers, source)
    try:
        rng.set_state(rng_state)
    except (ValueError, TypeError, KeyError) as exc:
        raise CaffeliteError(f"{source}: cannot restore the random generator ({exc})") from None


def _restore_net(net, net_id: int, layers: list, source: str) -> None:
    which = "the train net" if net_id == 0 else f"test net #{net_id - 1}"
    expected = [(i, name, kind) for i, name, kind, _ in _stateful_layers(net)]
    found = [(layer_id, name, kind) for layer_id, name, kind, _ in layers]
    if found != expected:
        raise CaffeliteError(
            f"{source}: the resume record for {which} lists stateful layers {found} "
            f"(index, name, type); the net has {expected}. Was it written for another net?"
        )
    for layer_id, name, _, state in layers:
        try:
            net.layers[layer_id].restore_resume_state(state)
        except CaffeliteError as exc:
            raise CaffeliteError(f"{source}: restoring layer {name!r} of {which}: {exc}") from None


def is_permutation(order, length: int) -> bool:
    """Whether a recorded order still fits a source of ``length`` items."""
    return len(order) == length and np.array_equal(np.sort(order), np.arange(length))
