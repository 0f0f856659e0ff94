"""A stand-in for CuPy on the CPU, so that CI checks the host/device discipline of GPU mode.

CI has no GPU, yet GPU mode's rules must hold there: layers compute on device arrays only,
values cross between host and device only in :mod:`caffelite.syncedmem` (or where code
asks for it explicitly), and a training iteration makes no round trip to the host. This
module behaves like the part of CuPy's API that caffelite uses, with numpy underneath:

* :class:`DeviceArray` wraps a numpy array and, like a CuPy array, refuses to mix with
  numpy arrays: an operation on both, writing one into the other, or ``numpy.asarray``
  of a device array raises ``TypeError``; scalars (and 0-d arrays) are allowed;
* ``asarray``/``ndarray.set`` count host-to-device copies and ``asnumpy``/``get`` and
  ``float()``/``int()``/``bool()`` of a device value count device-to-host ones, in
  :data:`transfers`;
* kernels (:mod:`caffelite.kernels`) run on device arrays through their CPU twins.

``backend.use_device(fake_device)`` puts it where CuPy goes; ``set_mode_gpu()`` then runs
everything on it. It is a test device, not a faster or slower CPU.
"""

from __future__ import annotations

import functools
import sys
import threading
import types

import numpy
from numpy.lib.mixins import NDArrayOperatorsMixin

#: Copies between host and device since the last :func:`reset_transfers`.
transfers = {"h2d": 0, "d2h": 0}
#: The same, per thread name (which thread made the copies: e.g. a prefetch thread).
transfers_by_thread: dict[str, dict[str, int]] = {}


def reset_transfers() -> None:
    transfers["h2d"] = transfers["d2h"] = 0
    transfers_by_thread.clear()


def _count(kind: str) -> None:
    transfers[kind] += 1
    mine = transfers_by_thread.setdefault(threading.current_thread().name, {"h2d": 0, "d2h": 0})
    mine[kind] += 1


def _mixing_error(value) -> TypeError:
    return TypeError(
        f"a numpy array of shape {numpy.shape(value)} was mixed with a device array: "
        "copy it to the device first (xp.asarray), as CuPy requires"
    )


def _to_host(value):
    """The numpy array behind a device value; scalars pass; a numpy array is refused."""
    if isinstance(value, DeviceArray):
        return value._host
    if isinstance(value, numpy.ndarray) and value.ndim > 0:
        raise _mixing_error(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return value


def _to_device(value):
    """Wrap what numpy returned: arrays and numpy scalars become device arrays (CuPy's
    reductions return 0-d device arrays, not host scalars)."""
    if isinstance(value, numpy.ndarray):
        return DeviceArray(value)
    if isinstance(value, numpy.generic):
        return DeviceArray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, list):
        return [_to_device(v) for v in value]
    return value


def _on_device(function):
    """``function`` taking and returning device arrays in place of numpy ones."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        args = _to_host(args)
        kwargs = {k: _to_host(v) for k, v in kwargs.items()}
        return _to_device(function(*args, **kwargs))

    return run


class DeviceArray(NDArrayOperatorsMixin):
    """An array "on the device": numpy's values, CuPy's rules."""

    __slots__ = ("_host",)
    __array_priority__ = 100

    def __init__(self, host: numpy.ndarray):
        self._host = host

    # ---- the numpy protocols: operations stay on the device ---------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "implicit conversion of a device array to numpy is not allowed (as in CuPy); "
            "use .get() or caffelite.backend.to_numpy()"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = _to_host(inputs)
        if out is not None:
            kwargs["out"] = tuple(_require_device(o)._host for o in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _to_device(result)

    def __array_function__(self, func, types_, args, kwargs):
        return _on_device(func)(*args, **kwargs)

    # ---- transfers -------------------------------------------------------------------
    def get(self, out=None) -> numpy.ndarray:
        _count("d2h")
        if out is None:
            return self._host.copy()
        out[...] = self._host
        return out

    def set(self, host) -> None:
        _count("h2d")
        self._host[...] = host

    def _scalar(self):
        _count("d2h")
        return self._host

    def __float__(self) -> float:
        return float(self._scalar())

    def __int__(self) -> int:
        return int(self._scalar())

    def __bool__(self) -> bool:
        return bool(self._scalar())

    def item(self):
        return self._scalar().item()

    def tolist(self):
        return self._scalar().tolist()

    # ---- the ndarray surface -----------------------------------------------------------
    def __getitem__(self, index):
        return _to_device(self._host[_to_host(index)])

    def __setitem__(self, index, value) -> None:
        self._host[_to_host(index)] = _to_host(value)

    def __len__(self) -> int:
        return len(self._host)

    def __iter__(self):
        return (_to_device(row) for row in self._host)

    def __getattr__(self, name: str):
        if name.startswith("__"):  # numpy's protocols (__array_interface__, ...) stay closed
            raise AttributeError(name)
        value = getattr(self._host, name)
        if callable(value):
            return _on_device(value)
        return _to_device(value)

    def __copy__(self):
        return DeviceArray(self._host.copy())

    def __repr__(self) -> str:
        return f"DeviceArray({self._host!r})"

    @property
    def shape(self):
        return self._host.shape

    @property
    def dtype(self):
        return self._host.dtype

    @property
    def size(self) -> int:
        return self._host.size

    @property
    def ndim(self) -> int:
        return self._host.ndim

    @property
    def T(self):
        return DeviceArray(self._host.T)

    @property
    def __caffelite_kernels__(self):
        """The kernel module for these arrays: the CPU kernels, behind the device rules."""
        return _kernels


def _require_device(value) -> DeviceArray:
    if not isinstance(value, DeviceArray):
        raise _mixing_error(value)
    return value


ndarray = DeviceArray


def asarray(value, dtype=None, order=None):
    """To the device: a copy for host values (counted), the array itself for device ones."""
    if isinstance(value, DeviceArray):
        return value if dtype is None else value.astype(dtype, copy=False)
    _count("h2d")
    return DeviceArray(numpy.array(value, dtype=dtype, order=order or "K", copy=True))


def array(value, dtype=None, copy=True, order="K"):
    if isinstance(value, DeviceArray):
        return DeviceArray(numpy.array(value._host, dtype=dtype, copy=copy, order=order))
    return asarray(value, dtype=dtype)


def asnumpy(value, out=None) -> numpy.ndarray:
    """To the host (counted)."""
    if isinstance(value, DeviceArray):
        return value.get(out=out)
    result = numpy.asarray(value)
    if out is not None:
        out[...] = result
        return out
    return result


def get_array_module(*arrays):
    if any(isinstance(a, DeviceArray) for a in arrays):
        return _module
    return numpy


def __getattr__(name: str):
    """Everything else is numpy's, working on device arrays (``xp.exp``, ``xp.zeros``)."""
    value = getattr(numpy, name)
    if isinstance(value, (type, types.ModuleType, numpy.ufunc)) or not callable(value):
        return value  # ufuncs dispatch to DeviceArray.__array_ufunc__ themselves (add.at too)
    return _on_device(value)


class _DeviceKernels:
    """:mod:`caffelite.kernels.cpu` for device arrays: unwrap, run, results in place."""

    def __getattr__(self, name: str):
        from caffelite.kernels import cpu

        kernel = getattr(cpu, name)

        def run(*args):
            return kernel(*(_kernel_argument(a) for a in args))

        return run


def _kernel_argument(value):
    if isinstance(value, DeviceArray):
        return value._host
    if isinstance(value, numpy.ndarray) and value.ndim > 0:
        raise _mixing_error(value)  # a kernel's arrays must all be on the device
    return value


_kernels = _DeviceKernels()
_module = sys.modules[__name__]  # what get_array_module returns for device arrays
