"""Caffe-style log lines (``I1126 05:34:21.123456  1234 solver.py:218] ...``) for the CLI."""

from __future__ import annotations

import logging
import os
import sys
import time

_LEVEL_LETTERS = {"DEBUG": "D", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}


class GlogFormatter(logging.Formatter):
    """glog's prefix: level letter, month-day, time with microseconds, pid, file:line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(record.created))
        micros = int((record.created % 1) * 1_000_000)
        letter = _LEVEL_LETTERS.get(record.levelname, "I")
        where = f"{os.path.basename(record.pathname)}:{record.lineno}"
        return f"{letter}{stamp}.{micros:06d} {os.getpid():>6} {where}] {record.getMessage()}"


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send caffelite's log to ``stream`` (stderr) in glog format, once."""
    logger = logging.getLogger("caffelite")
    logger.setLevel(level)
    if not any(getattr(h, "_caffelite", False) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(GlogFormatter())
        handler._caffelite = True
        logger.addHandler(handler)
    logger.propagate = False
