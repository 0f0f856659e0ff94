"""Refusing sizes that cannot fit, before anything is allocated.

A prototxt with ``num_output: 2147483647`` or a batch of a million would otherwise
reach numpy as an impossible allocation: a MemoryError, numpy's own "array is too
big", or minutes spent filling gigabytes. Every Blob allocation is checked here
first against one limit, the **memory limit**:

* by default, the memory this process can still get: the smallest of the
  kernel's MemAvailable, the cgroup's memory.max headroom and the address-space
  rlimit's headroom, read when the check runs (allocations are rare: a Blob's
  buffer only grows, so steady-state training checks nothing);
* or a number of bytes the user sets: the ``CAFFELITE_MEMORY_LIMIT`` environment
  variable (``8G``, ``512M``, ``1000000``) or ``caffelite.set_memory_limit``,
  which also lift the limit above the default.

The check raises ``SizeLimitError`` (a CaffeliteError) with the shape and the
bytes; the Net adds the layer and the blob, where those are known.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource

from caffelite.errors import CaffeliteError

ENV_VAR = "CAFFELITE_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)

_explicit_limit: int | None = None


class SizeLimitError(CaffeliteError):
    """An allocation refused before it was made; ``shape`` and ``nbytes`` say what.

    ``blob`` is the Blob that asked (where one did), so that the Net, which knows
    the names, can say which layer's which blob it was (``naming``).
    """

    def __init__(self, what: str, detail: str, shape: tuple[int, ...], nbytes: int):
        super().__init__(f"{what} {detail}")
        self.detail = detail
        self.shape = shape
        self.nbytes = nbytes
        self.blob = None
        self.subject: str | None = None  # e.g. "parameter blob 0", where the asker knows

    def naming(self, what: str) -> str:
        """The message with ``what`` (e.g. "top blob 'conv1'") as its subject."""
        return f"{what} {self.detail}"


def parse_size(text: str) -> int:
    """``"8G"`` -> 8 GiB, ``"512M"``, ``"100000"`` (bytes); a clear error otherwise."""
    match = _SIZE.match(str(text))
    if not match:
        raise CaffeliteError(
            f"{ENV_VAR}={text!r} is not a size; give bytes or a number with K, M, G or T"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_bytes(nbytes: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes as a user reads them."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def set_memory_limit(nbytes: int | str | None) -> None:
    """Cap (or lift the cap on) the bytes a blob may need; None: back to the default
    (the environment variable if set, else the available memory)."""
    global _explicit_limit
    _explicit_limit = None if nbytes is None else _positive(parse_size(nbytes))


def _positive(nbytes: int) -> int:
    if nbytes <= 0:
        raise CaffeliteError(f"a memory limit must be positive, got {nbytes}")
    return nbytes


@contextlib.contextmanager
def memory_limit(nbytes: int | str | None):
    """``with memory_limit("1G"):`` -- the limit for the block, the old one after."""
    global _explicit_limit
    previous = _explicit_limit
    set_memory_limit(nbytes)
    try:
        yield
    finally:
        _explicit_limit = previous


def get_memory_limit() -> tuple[int, str]:
    """(bytes, where the number comes from) for the error messages."""
    return _user_limit() or (available_memory(), "the memory available to this process")


def _user_limit() -> tuple[int, str] | None:
    if _explicit_limit is not None:
        return _explicit_limit, "set by caffelite.set_memory_limit"
    env = os.environ.get(ENV_VAR)
    if env:
        return _positive(parse_size(env)), f"set by {ENV_VAR}"
    return None


def available_memory() -> int:
    """The bytes this process can still allocate, as far as the system tells."""
    candidates = [_meminfo_available(), _cgroup_headroom(), _rlimit_headroom()]
    known = [c for c in candidates if c is not None]
    return max(min(known), 0) if known else 1 << 62


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def _cgroup_headroom() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as handle:
            current = int(handle.read().strip())
        return int(limit) - current
    except (OSError, ValueError):
        return None


def _rlimit_headroom() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        used = 0
    return soft - used


def check_allocation(shape: tuple[int, ...], itemsize: int, what: str = "blob") -> int:
    """The bytes of an array of ``shape``; SizeLimitError if they exceed the limit."""
    nbytes = math.prod(shape) * itemsize
    user = _user_limit()
    if user is None and nbytes <= _ALWAYS_FITS:
        return nbytes
    limit, origin = user or get_memory_limit()
    if nbytes > limit:
        raise SizeLimitError(
            what,
            f"of shape {tuple(shape)} needs {format_bytes(nbytes)} ({nbytes} bytes), more "
            f"than the memory limit of {format_bytes(limit)} ({origin}); raise it with "
            f"{ENV_VAR}=<bytes> or caffelite.set_memory_limit(<bytes>)",
            tuple(shape),
            nbytes,
        )
    return nbytes


#: Below this (and with no limit set), an allocation is not worth reading /proc for.
_ALWAYS_FITS = 1 << 20


def name_blob(exc: SizeLimitError, layer, tops) -> CaffeliteError:
    """``exc`` as an error of ``layer`` naming the blob: one of ``tops`` (name -> Blob)
    or of the layer's parameter blobs if it is one, else the subject it came with."""
    if exc.subject is None:
        for name, blob in tops.items():
            if blob is exc.blob:
                return layer.error(exc.naming(f"top blob {name!r}"))
        for index, blob in enumerate(layer.blobs):
            if blob is exc.blob:
                return layer.error(exc.naming(f"parameter blob {index}"))
    return layer.error(exc.naming(exc.subject) if exc.subject else str(exc))


def check_net_memory(net) -> None:
    """Refuse a net whose blobs fit one by one but not together.

    Blob buffers start as untouched zero pages (numpy asks calloc for them), so a
    net can be built whose forward and backward would then run out of memory at
    the first batch. What the tops will need (data, and diff where backward
    runs) is summed, each buffer once, and held against the limit; parameters
    were filled already, so the available memory counts them.
    """
    needs_diff = any(net.layer_need_backward)
    seen: set[int] = set()
    sizes = []
    for name, blob in zip(net._blob_names, net._blobs, strict=True):
        memory = blob.data_memory
        if id(memory) in seen:
            continue
        seen.add(id(memory))
        nbytes = memory.size * memory.dtype.itemsize
        sizes.append((nbytes * (2 if needs_diff else 1), name, blob.shape))
    total = sum(size for size, _, _ in sizes)
    if total <= _ALWAYS_FITS and _user_limit() is None:
        return
    limit, origin = get_memory_limit()
    if total > limit:
        largest = ", ".join(
            f"{name!r} {shape} {format_bytes(size)}"
            for size, name, shape in sorted(sizes, reverse=True)[:3]
        )
        raise CaffeliteError(
            f"net {net.name!r} needs {format_bytes(total)} for its blobs"
            f"{' (data and diff)' if needs_diff else ''}, more than the memory limit of "
            f"{format_bytes(limit)} ({origin}); the largest: {largest}. Lower the batch size, "
            f"or raise the limit with {ENV_VAR}=<bytes> or caffelite.set_memory_limit(<bytes>)"
        )
