"""Reading whole files with errors that say what the file was for."""

from __future__ import annotations

import os

from caffelite.errors import CaffeliteError


def read_bytes(path, what: str) -> bytes:
    """The content of ``path``; a missing or unreadable file is a CaffeliteError naming
    it as ``what`` (e.g. 'image', 'CIFAR-10 batch')."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CaffeliteError(f"{what} {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise CaffeliteError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from None
