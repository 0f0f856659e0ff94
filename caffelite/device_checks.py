"""Checks on device values that wait for the next time results come to the host anyway.

On the CPU a layer checks its inputs as it runs (a label out of range is an error naming
the layer and the label). On a GPU, asking "is any label bad?" means copying the answer
to the host, a round trip that would stall every iteration. So on the device a layer
folds its failure flag into one device boolean per check (an OR, no copy) and the check
is read where the host waits for results regardless: at the solver's display, snapshot
and the end of ``step``, after a test pass, and after pycaffe's ``net.forward()``. The
error then names the layer and the rule, though no longer the offending value.
"""

from __future__ import annotations

from caffelite import backend
from caffelite.errors import CaffeliteError

#: (layer name, message) -> (device module, device boolean: failed since the last read)
_pending: dict[tuple[str, str], tuple[object, object]] = {}


def check(layer, failed, message: str) -> None:
    """Raise ``layer.error(message)`` now if ``failed`` is a host value that is true; a
    device value is remembered and read by :func:`raise_pending`."""
    device = backend.get_array_module(failed)
    if device.__name__ == "numpy":
        if bool(failed):
            raise layer.error(message)
        return
    key = (layer.name, f"layer {layer.name!r} (type {layer.type}): {message}")
    previous = _pending.get(key)
    _pending[key] = (device, failed if previous is None else previous[1] | failed)


def raise_pending() -> None:
    """Read every remembered check (one copy per device) and raise the first that failed."""
    if not _pending:
        return
    checks = list(_pending.items())
    _pending.clear()
    by_device: dict[int, list] = {}
    for (_, message), (device, flag) in checks:
        by_device.setdefault(id(device), [device, [], []])
        by_device[id(device)][1].append(flag)
        by_device[id(device)][2].append(message)
    for device, flags, messages in by_device.values():
        values = backend.to_numpy(device.stack(flags))
        for value, message in zip(values, messages, strict=True):
            if value:
                raise CaffeliteError(
                    f"{message} (seen on the device since the last check; GPU mode checks "
                    "at each display, snapshot and test)"
                )
