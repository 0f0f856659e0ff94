"""A tqdm progress bar over a solver's iterations, for a person watching a terminal.

Log lines are routed through tqdm while the bar is shown so they do not tear it.
"""

from __future__ import annotations

import contextlib
import logging


class ProgressBar:
    """``with ProgressBar(solver, enabled):`` shows iter / max_iter and the smoothed loss."""

    def __init__(self, solver, enabled: bool = True):
        self.solver = solver
        self.enabled = enabled
        self._bar = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ProgressBar:
        if not self.enabled:
            return self
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._stack.enter_context(logging_redirect_tqdm([logging.getLogger("caffelite")]))
        self._bar = self._stack.enter_context(
            tqdm(
                total=self.solver.param.max_iter,
                initial=self.solver.iter,
                unit="iter",
                dynamic_ncols=True,
                leave=True,
            )
        )
        self.solver.add_callback(self)
        return self

    def on_start(self) -> None:
        """Called by the solver as each iteration starts."""

    def on_gradients_ready(self) -> None:
        bar = self._bar
        if bar is None:
            return
        bar.update(self.solver.iter + 1 - bar.n)
        if bar.n % 10 == 0:
            bar.set_postfix(loss=f"{self.solver.smoothed_loss:.4f}", refresh=False)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self.solver.callbacks.remove(self)
            self._bar = None
        self._stack.close()
