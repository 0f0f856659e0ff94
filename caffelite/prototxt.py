"""Reading and writing Caffe's protobuf files, with errors that name the file.

Text files (prototxt) are parsed by protobuf's own text-format parser; its line and
column are carried into the error message. Binary files (.caffemodel,
.solverstate, .binaryproto) that do not parse are reported as corrupt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from google.protobuf import message as pb_message
from google.protobuf import text_format

from caffelite.errors import CaffeliteError


def read_text(path, message):
    """Parse the prototxt at ``path`` into ``message`` (returned)."""
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise CaffeliteError(f"cannot read {path}: {exc.strerror}") from exc
    if b"\0" in payload:
        raise CaffeliteError(
            f"{path} is a binary file, not a {message.DESCRIPTOR.name} prototxt (text); "
            "is it a .caffemodel or .solverstate given where a prototxt belongs?"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        # Caffe parses bytes: a Latin-1 comment is no reason to fail.
        text = payload.decode("latin-1")
    return parse_text(text, message, source=str(path))


def parse_text(text: str, message, source: str = "<string>"):
    """Parse prototxt ``text``; a ParseError becomes ``source:line:column: what``."""
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(":", 2)[-1].strip()
        where = f"{source}:{line}:{column}" if line is not None else source
        raise CaffeliteError(
            f"{where}: malformed {message.DESCRIPTOR.name} prototxt: {detail}"
        ) from None
    return message


def read_binary(path, message):
    """Parse the binary protobuf at ``path``; a corrupt file says so."""
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise CaffeliteError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        message.ParseFromString(payload)
    except (pb_message.DecodeError, ValueError) as exc:
        raise CaffeliteError(
            f"{path} is corrupt or not a binary {message.DESCRIPTOR.name} file: {exc}"
        ) from None
    return message


def write_binary_atomic(path, message) -> None:
    """Write ``message`` so that ``path`` is either the old file or the whole new one."""
    write_bytes_atomic(path, message.SerializeToString())


def write_bytes_atomic(path, payload: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``.

    A full disk or an I/O error on the way is a CaffeliteError; the temporary
    file is removed and whatever ``path`` held before stays as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def write_error(path, exc: OSError) -> CaffeliteError:
    """The error for a failed atomic write: what the system said, and what is kept."""
    reason = exc.strerror or str(exc)
    return CaffeliteError(
        f"cannot write {path}: {reason}; nothing was left half-written "
        "(any earlier file of that name is unchanged)"
    )


def write_text(path, message) -> None:
    write_bytes_atomic(path, text_format.MessageToString(message).encode())
