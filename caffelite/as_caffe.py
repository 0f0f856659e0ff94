"""Run unchanged ``import caffe`` programs against caffelite (opt in).

``python -m caffelite.as_caffe script.py [args]`` (or the ``caffelite-as-caffe``
command, or ``-m module`` in place of a script) makes ``caffe`` and every
``caffe.X`` resolve to ``caffelite`` and ``caffelite.X``, module for module:
``from caffe.proto import caffe_pb2``, ``import caffe.draw``, ``from caffe.io
import Transformer`` and ``import caffe.pycaffe`` all give caffelite's own module
objects, so ``caffe.io is caffelite.io``. ``install()`` does the same in-process.

A real Caffe is never shadowed silently: when ``caffe`` is already imported, or
importable from ``sys.path`` (a built pycaffe, or ``caffe/python`` on PYTHONPATH),
the alias refuses with an error naming where that Caffe lives; ``allow_shadow=True``
(``--shadow-real-caffe``) goes ahead with a warning on stderr.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import warnings

from caffelite.errors import CaffeliteError

ALIAS = "caffe"
TARGET = "caffelite"


def _target_name(fullname: str) -> str | None:
    """``caffe.io`` -> ``caffelite.io``; None for names outside the ``caffe`` package."""
    if fullname == ALIAS:
        return TARGET
    if fullname.startswith(ALIAS + "."):
        return TARGET + fullname[len(ALIAS) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Hands back the already-imported caffelite module as the ``caffe`` one."""

    def __init__(self, module):
        self._module = module
        self._own_spec = module.__spec__

    def create_module(self, spec):
        return self._module

    def exec_module(self, module) -> None:
        # The import system stamped the alias's spec on the module; the module keeps
        # its own (so reload() and pickling still see caffelite's names).
        module.__spec__ = self._own_spec


class CaffeAliasFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that resolves ``caffe[.X]`` to ``caffelite[.X]``."""

    def find_spec(self, fullname, path=None, target=None):
        target_name = _target_name(fullname)
        if target_name is None:
            return None
        try:
            module = importlib.import_module(target_name)
        except ModuleNotFoundError as exc:
            if exc.name != target_name:
                raise
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: caffelite, standing in for caffe, has no "
                f"module {target_name!r}",
                name=fullname,
            ) from None
        is_package = hasattr(module, "__path__")
        spec = importlib.machinery.ModuleSpec(
            fullname,
            _AliasLoader(module),
            origin=getattr(module, "__file__", None),
            is_package=is_package,
        )
        if is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


def installed() -> bool:
    """Whether ``caffe`` currently resolves to caffelite in this process."""
    return any(isinstance(finder, CaffeAliasFinder) for finder in sys.meta_path)


def find_real_caffe() -> str | None:
    """Where a Caffe other than caffelite is imported or importable from; None if nowhere."""
    loaded = sys.modules.get(ALIAS)
    if loaded is not None:
        if getattr(loaded, "__name__", None) == TARGET:
            return None
        return getattr(loaded, "__file__", None) or repr(loaded)
    if installed():
        return None
    spec = importlib.util.find_spec(ALIAS)
    if spec is None:
        return None
    return spec.origin or ", ".join(spec.submodule_search_locations or []) or ALIAS


def install(allow_shadow: bool = False) -> None:
    """Make ``import caffe`` (and every ``caffe.X``) give caffelite's modules.

    Refuses with CaffeliteError when a real Caffe is importable, unless
    ``allow_shadow``, which warns instead. Installing twice is harmless.
    """
    if installed():
        return
    real = find_real_caffe()
    if real is not None:
        message = (
            f"a real Caffe is importable as 'caffe' (from {real}); caffelite will not stand "
            "in for it"
        )
        if not allow_shadow:
            raise CaffeliteError(
                f"{message}. Remove it from sys.path/PYTHONPATH, use 'import caffelite as "
                "caffe', or pass --shadow-real-caffe (install(allow_shadow=True)) to "
                "shadow it on purpose."
            )
        warnings.warn(
            f"{message} -- shadowing it on purpose: 'import caffe' now gives caffelite",
            RuntimeWarning,
            stacklevel=2,
        )
        for name in [n for n in sys.modules if _target_name(n) is not None]:
            del sys.modules[name]
    sys.meta_path.insert(0, CaffeAliasFinder())


def uninstall() -> None:
    """Undo ``install()``: ``caffe`` no longer resolves to caffelite in new imports."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, CaffeAliasFinder)]
    for name in [n for n in sys.modules if _target_name(n) is not None]:
        if getattr(sys.modules[name], "__name__", "").startswith(TARGET):
            del sys.modules[name]


USAGE = """usage: caffelite-as-caffe [--shadow-real-caffe] (script.py | -m module) [args...]

Run a program that says 'import caffe' with caffelite standing in for caffe.
  --shadow-real-caffe  stand in even when a real Caffe is importable (with a warning)
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    allow_shadow = bool(args) and args[0] == "--shadow-real-caffe"
    if allow_shadow:
        args.pop(0)
    if not args or args[0] in ("-h", "--help") or args[0] == "-m" and len(args) < 2:
        print(USAGE, end="", file=sys.stdout if args[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    if args[0] != "-m":
        # As `python script.py` would: the script's folder first on sys.path (checked
        # too, so a script sitting beside a real caffe package is refused).
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
    try:
        install(allow_shadow=allow_shadow)
    except CaffeliteError as exc:
        print(f"caffelite-as-caffe: {exc}", file=sys.stderr)
        return 2
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
