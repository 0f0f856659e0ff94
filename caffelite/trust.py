"""Refusing ``Python`` layers, for nets from sources one does not trust.

Building a net runs no code of the prototxt's choosing except through a
``type: "Python"`` layer, which imports ``python_param.module`` and runs its class.
A server that loads prototxts from elsewhere turns that off:
``caffelite.set_allow_python_layers(False)`` (every net and solver built after),
``Net(..., allow_python_layers=False)`` (one net), or ``--no_python_layers`` on
the command line. The check runs over every layer of the NetParameter, whatever
its phase, before any layer is created, so no module is ever imported.
"""

from __future__ import annotations

from caffelite.errors import CaffeliteError

_allowed = True


def set_allow_python_layers(allowed: bool) -> None:
    """Allow (the default) or refuse ``Python`` layers in nets built from now on."""
    global _allowed
    _allowed = bool(allowed)


def python_layers_allowed() -> bool:
    return _allowed


def check_python_layers(param, allowed: bool | None, source: str) -> None:
    """CaffeliteError naming the first Python layer of ``param`` if they are refused."""
    if (_allowed if allowed is None else allowed) or param is None:
        return
    for layer in param.layer:
        if layer.type == "Python":
            python = layer.python_param
            raise CaffeliteError(
                f"{source}: layer {layer.name!r} is a Python layer (module "
                f"{python.module!r}, class {python.layer!r}), and Python layers are refused "
                "here (allow_python_layers=False): they run code from the module they name"
            )
