"""The ``Python`` layer type: a user's Layer subclass named by ``python_param``.

The user's class subclasses ``caffelite.Layer`` (pycaffe's ``caffe.Layer``) and is
imported from ``python_param.module``; its exceptions propagate unchanged. In GPU
mode it sees numpy arrays (the blobs sync around it), unless its class sets
``device_arrays = True`` to get the device arrays and ``self.xp`` = CuPy.
"""

from __future__ import annotations

import importlib

from caffelite.errors import CaffeliteError
from caffelite.layer import Layer, register_layer


@register_layer("Python")
def create_python_layer(layer_param, phase):
    python_param = layer_param.python_param
    where = f"Python layer {layer_param.name!r}"
    if not python_param.module or not python_param.layer:
        raise CaffeliteError(f"{where} needs python_param {{ module: ... layer: ... }}")
    try:
        module = importlib.import_module(python_param.module)
    except ImportError as exc:
        raise CaffeliteError(
            f"{where}: cannot import module {python_param.module!r} ({exc}); "
            "is its directory on PYTHONPATH?"
        ) from exc
    cls = getattr(module, python_param.layer, None)
    if cls is None:
        raise CaffeliteError(
            f"{where}: module {python_param.module!r} has no class {python_param.layer!r}"
        )
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise CaffeliteError(
            f"{where}: {python_param.module}.{python_param.layer} must subclass caffelite.Layer"
        )
    layer = cls(layer_param, phase)
    layer.type = "Python"
    layer.device_arrays = _declares_device_arrays(cls)
    return layer


def _declares_device_arrays(cls) -> bool:
    """A user's layer computes on device arrays only if its own class hierarchy says so."""
    for klass in cls.__mro__:
        if klass is Layer:
            return False
        if "device_arrays" in vars(klass):
            return bool(vars(klass)["device_arrays"])
    return False
