"""Refusing an LMDB whose data file is shorter than its own metadata says.

LMDB reads through a memory map: a page past the end of a truncated file (a copy
cut short, a download interrupted, a disk that filled up) is not an error but a
SIGBUS that kills the process. The meta page records the last page in use, so
the file's length can be checked before any record is touched.
"""

from __future__ import annotations

import os

from caffelite.errors import CaffeliteError


def data_file(path: str) -> str:
    """The file holding the pages: ``path/data.mdb``, or ``path`` itself (no subdir)."""
    return os.path.join(path, "data.mdb") if os.path.isdir(path) else path


def check_not_truncated(env, path: str) -> None:
    """CaffeliteError if the pages the metadata counts do not all lie in the file."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    try:
        size = os.path.getsize(data_file(path))
    except OSError as exc:
        raise CaffeliteError(f"cannot read LMDB {path!r}: {exc.strerror}") from None
    if size < needed:
        raise CaffeliteError(
            f"LMDB {path!r} is truncated: {data_file(path)} has {size} bytes, but its "
            f"metadata counts {needed} (copied or downloaded incompletely, or cut short "
            "while being written?)"
        )
