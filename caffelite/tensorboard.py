"""TensorBoard event files from a training run (``pip install caffelite[tensorboard]``).

A solver callback: ``with TensorBoardLogger(solver, "runs/lenet"): solver.solve()`` (or
``caffelite train --solver S --tensorboard runs/lenet``), then ``tensorboard --logdir runs``.
It writes, with the solver's iteration as the step:

* ``train/loss`` (the iteration's loss, averaged over ``iter_size``), ``train/smoothed_loss``
  (the ``average_loss`` mean the log prints), ``train/learning_rate``: every iteration;
* ``train/iterations_per_second``: at each display, the figure the log prints;
* ``test/<output>`` (``test<k>/<output>`` for test net k > 0): every output at each test,
  one tag per element for outputs with several values;
* with ``histogram_interval`` N: ``params/<layer>/<i>`` and ``gradients/<layer>/<i>`` every
  N iterations.

The writer is tensorboardX's, which needs no TensorFlow.
"""

from __future__ import annotations

import numpy as np

from caffelite import backend
from caffelite.errors import CaffeliteError
from caffelite.lr_policy import learning_rate


class TensorBoardLogger:
    """Solver callback writing TensorBoard scalars (and optional histograms) to ``logdir``."""

    def __init__(self, solver, logdir, histogram_interval: int = 0):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise CaffeliteError(
                "--tensorboard needs the tensorboardX package: pip install 'caffelite[tensorboard]'"
            ) from None
        if histogram_interval < 0:
            raise CaffeliteError(f"histogram_interval must be >= 0, got {histogram_interval}")
        self.solver = solver
        self.histogram_interval = histogram_interval
        self.writer = SummaryWriter(str(logdir))
        solver.add_callback(self)

    # ---- the solver's callbacks --------------------------------------------------
    def on_start(self) -> None:
        """Nothing before the forward pass."""

    def on_gradients_ready(self) -> None:
        solver, add = self.solver, self.writer.add_scalar
        step = solver.iter
        add("train/loss", solver.loss, step)
        add("train/smoothed_loss", solver.smoothed_loss, step)
        rate, _ = learning_rate(solver.param, step, solver.current_step)  # as apply_update will
        add("train/learning_rate", rate, step)
        display = solver.param.display
        if display and step % display == 0 and solver.iterations_per_second is not None:
            add("train/iterations_per_second", solver.iterations_per_second, step)
        if self.histogram_interval and step % self.histogram_interval == 0:
            self._histograms(step)

    def on_test_done(self, test_net_id: int, results) -> None:
        prefix = "test" if test_net_id == 0 else f"test{test_net_id}"
        for name, value in results.items():
            values = np.asarray(value, dtype=np.float64).ravel()
            if values.size == 1:
                self.writer.add_scalar(f"{prefix}/{name}", float(values[0]), self.solver.iter)
                continue
            for i, v in enumerate(values):
                self.writer.add_scalar(f"{prefix}/{name}/{i}", float(v), self.solver.iter)

    def _histograms(self, step: int) -> None:
        for layer_name, blobs in self.solver.net.params.items():
            for i, blob in enumerate(blobs):
                data = backend.to_numpy(blob.data)
                self.writer.add_histogram(f"params/{layer_name}/{i}", data, step)
                self.writer.add_histogram(
                    f"gradients/{layer_name}/{i}", backend.to_numpy(blob.diff), step
                )

    # ---- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Stop listening to the solver and flush the event file."""
        if self in self.solver.callbacks:
            self.solver.callbacks.remove(self)
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tensorboard_for(solver, logdir, histogram_interval: int = 0):
    """A TensorBoardLogger as a context manager, or a do-nothing one when ``logdir`` is None."""
    import contextlib

    if logdir is None:
        return contextlib.nullcontext()
    return TensorBoardLogger(solver, logdir, histogram_interval)
