"""Command lines in gflags' spelling, for the ports of Caffe's tools.

Caffe's tools take ``-flag value``, ``--flag=value`` and, for booleans, ``-flag``,
``-flag=false`` and ``-noflag``, before or between the positional arguments. Scripts
written for them run unchanged against these ports.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from caffelite.errors import CaffeliteError

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class CaffeFlags:
    """A tool's flags: ``add`` each (the default's type is the flag's type), then ``parse``."""

    def __init__(self, prog: str, usage: str, description: str):
        self.prog = prog
        self._parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description)
        self._parser.add_argument("positional", nargs="*", help=argparse.SUPPRESS)
        self._bools: set[str] = set()
        self._names: set[str] = set()

    def add(self, name: str, default, help: str) -> None:
        self._names.add(name)
        if isinstance(default, bool):
            self._bools.add(name)
            kind = _bool
        else:
            kind = type(default)
        self._parser.add_argument(f"--{name}", type=kind, default=default, help=help)

    def _canonical(self, argv: Sequence[str]) -> list[str]:
        """gflags spellings -> argparse's: ``-x``/``--x`` the same, bare booleans true."""
        out = []
        for arg in argv:
            if not arg.startswith("-") or arg in ("-", "--") or arg[1:2].isdigit():
                out.append(arg)
                continue
            body = arg.lstrip("-")
            name, equals, value = body.partition("=")
            if name in self._bools and not equals:
                out.append(f"--{name}=true")
            elif name.startswith("no") and name[2:] in self._bools and not equals:
                out.append(f"--{name[2:]}=false")
            elif name in self._names or name in ("h", "help"):
                out.append(f"--{body}" if len(name) > 1 else f"-{body}")
            else:
                self._parser.error(f"unknown flag {arg!r}")
        return out

    def parse(self, argv: Sequence[str] | None, positional: Sequence[str]) -> argparse.Namespace:
        """Flags and ``positional`` names (a trailing '?' marks an optional one)."""
        import sys

        args = self._parser.parse_intermixed_args(
            self._canonical(sys.argv[1:] if argv is None else argv)
        )
        required = [name for name in positional if not name.endswith("?")]
        values = args.positional
        if not len(required) <= len(values) <= len(positional):
            self._parser.error(f"expected {' '.join(positional)}, got {len(values)} arguments")
        for name, value in zip(positional, values, strict=False):
            setattr(args, name.rstrip("?"), value)
        for name in positional[len(values) :]:
            setattr(args, name.rstrip("?"), None)
        return args


def run_tool(name: str, call: Callable[[], object]) -> int:
    """Run a tool's work with Caffe's log on stderr; a CaffeliteError is logged as the
    tool's error (exit status 1) rather than a traceback."""
    import logging

    from caffelite.logging_setup import configure

    configure()
    try:
        call()
    except CaffeliteError as exc:
        logging.getLogger("caffelite").error("%s: %s", name, exc)
        return 1
    return 0
