"""The built-in layers: every module in this package registers its layers on import."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def __getattr__(name: str):
    """``caffe.layers.Convolution(...)``: pycaffe's NetSpec layer functions.

    NetSpec's names are capitalised layer types and this package's modules are not,
    so the two never clash.
    """
    if name[:1].isupper():
        from caffelite.net_spec import layers

        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
