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


# glog's severities, as pycaffe's init_log(level) takes them (FLAGS_minloglevel).
_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def init_log(level: int = 0, stderr: bool = True) -> None:
    """pycaffe's ``caffe.init_log``: log messages of glog severity ``level`` and above
    (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL) in glog's format. caffelite writes no glog
    log files, so the log always goes to stderr; ``stderr`` is taken for pycaffe's
    signature."""
    if level not in _GLOG_LEVELS:
        from caffelite.errors import CaffeliteError

        raise CaffeliteError(f"init_log level must be 0 (INFO) to 3 (FATAL), got {level!r}")
    configure(_GLOG_LEVELS[level])


def log(message: str) -> None:
    """pycaffe's ``caffe.log``: one INFO line in Caffe's log."""
    logging.getLogger("caffelite").info("%s", message, stacklevel=2)


def caffe_number(value) -> str:
    """A number as Caffe's logs print it (C++ stream default: 6 significant digits)."""
    return f"{float(value):.6g}"
