"""Turning SIGINT / SIGHUP / SIGTERM into solver actions (Caffe's SignalHandler).

The handler only records that a signal arrived; the solver asks
``get_requested_action()`` once per iteration (and between test batches) and
acts at a safe point: "snapshot" writes a snapshot and carries on, "stop"
writes a snapshot and ends training cleanly, "none" ignores the signal.

Caffe's CLI default is SIGINT -> stop, SIGHUP -> snapshot; SIGTERM, which cluster
schedulers send before they kill a job, stops like SIGINT (Caffe let it kill the
process, losing the work since the last snapshot). A second SIGINT
while a stop is already under way raises KeyboardInterrupt, so a user whose
training is stuck (say, in a slow data layer) can still quit.
"""

from __future__ import annotations

import signal

from caffelite.errors import CaffeliteError


class SolverAction:
    """What the solver is asked to do after the current iteration."""

    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"
    ALL = (NONE, STOP, SNAPSHOT)


def parse_action(name) -> str:
    """Normalise an action name ("stop", "snapshot", "none"); a clear error otherwise."""
    action = str(name).strip().lower()
    if action not in SolverAction.ALL:
        raise CaffeliteError(
            f"unknown signal action {name!r}; choose one of: {', '.join(SolverAction.ALL)}"
        )
    return action


_SIGHUP = getattr(signal, "SIGHUP", None)  # absent on Windows


class SignalHandler:
    """Records SIGINT / SIGHUP / SIGTERM while installed and maps them to solver actions.

    Use as a context manager (or ``install()`` / ``uninstall()``); the previous
    handlers come back on exit. Hand ``get_requested_action`` to the solver with
    ``solver.set_action_function(handler.get_requested_action)``.
    """

    def __init__(
        self,
        sigint_action: str = SolverAction.STOP,
        sighup_action: str = SolverAction.SNAPSHOT,
        sigterm_action: str = SolverAction.STOP,
    ):
        self.sigint_action = parse_action(sigint_action)
        self.sighup_action = parse_action(sighup_action)
        self.sigterm_action = parse_action(sigterm_action)
        self._got_sigint = False
        self._got_sighup = False
        self._got_sigterm = False
        self._stopping = False
        self._previous: dict[int, object] | None = None

    # ---- installing --------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self._previous is not None

    def install(self) -> SignalHandler:
        if self.installed:
            raise CaffeliteError("this SignalHandler is already installed")
        previous = {}
        try:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
            previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
            if _SIGHUP is not None:
                previous[_SIGHUP] = signal.signal(_SIGHUP, self._handle)
        except ValueError as exc:  # not the main thread
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            raise CaffeliteError(
                f"cannot install signal handlers: {exc} (install from the main thread)"
            ) from None
        self._previous = previous
        return self

    def uninstall(self) -> None:
        if self._previous is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = None

    def __enter__(self) -> SignalHandler:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()

    # ---- the handler and the query ---------------------------------------------
    def _handle(self, signum, frame) -> None:
        if signum == _SIGHUP:
            self._got_sighup = True
            return
        if signum == signal.SIGTERM:  # a scheduler's warning: a second one changes nothing
            self._got_sigterm = True
            return
        if self.sigint_action == SolverAction.STOP:
            if self._stopping:
                raise KeyboardInterrupt("second SIGINT while stopping")
            self._stopping = True
        self._got_sigint = True

    def get_requested_action(self) -> str:
        """The action for a signal received since the last call, or "none".

        Each signal is reported once; SIGHUP is reported before SIGINT when both
        are pending (Caffe's order), so neither is lost.
        """
        if self._got_sighup:
            self._got_sighup = False
            return self.sighup_action
        if self._got_sigint:
            self._got_sigint = False
            return self.sigint_action
        if self._got_sigterm:
            self._got_sigterm = False
            return self.sigterm_action
        return SolverAction.NONE
