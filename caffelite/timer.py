"""Timer: pycaffe's ``caffe.Timer`` (Caffe's util/benchmark Timer) on the host clock.

``start()`` begins a measurement (ignored while running), ``stop()`` ends it, and
``ms`` is the last measurement in milliseconds, stopping a running timer first; read
before any ``start()`` it warns and is 0, as Caffe's. Caffe's CPU timer truncates to
whole milliseconds; this one keeps the fraction (as Caffe's GPU timer does).
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("caffelite")


class Timer:
    def __init__(self):
        self._running = False
        self._has_run = False
        self._start = self._stop = 0.0

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if not self._running:
            self._start = time.perf_counter()
            self._running = True
            self._has_run = True

    def stop(self) -> None:
        if self._running:
            self._stop = time.perf_counter()
            self._running = False

    @property
    def ms(self) -> float:
        """Milliseconds between the last start() and stop()."""
        if not self._has_run:
            logger.warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0

    @property
    def seconds(self) -> float:
        return self.ms / 1000.0
