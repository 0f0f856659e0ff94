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
        return f"{letter}{stamp}.{micros:06d} {os.getpid():>5} {where}] {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, not the one seen at start-up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Send caffelite's log to stderr in glog format (once per process)."""
    logger = logging.getLogger("caffelite")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)


def caffe_number(value) -> str:
    """A number as Caffe's logs print it (C++ stream default: 6 significant digits)."""
    return f"{float(value):.6g}"
