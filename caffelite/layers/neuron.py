"""NeuronLayer: the base of element-wise layers (one bottom, one top of the same shape).

Nets often run these layers in place: the Net then passes the *same* Blob as
bottom and top, so forward overwrites ``x`` and ``top.diff`` *is* ``bottom.diff``.
A layer whose gradient can be written from the output alone (Sigmoid, TanH, Exp)
needs nothing more. A layer whose gradient needs ``x`` sets ``keeps_input`` and
the base copies ``x`` aside before an in-place forward (as Caffe's PReLU does
with ``bottom_memory_``); outside in-place use no copy is made.
"""

from __future__ import annotations

from caffelite.layer import Layer


class NeuronLayer(Layer):
    """One bottom, one top shaped like it; subclasses implement ``compute``/``gradient``.

    ``compute(x, y)`` writes ``y`` (which may be ``x``). ``gradient(x, y, dy, dx)``
    writes ``dx`` (which may be ``dy``) from the input, the output and the top diff;
    ``x`` is the saved copy when running in place and ``keeps_input`` is set.
    """

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    #: the gradient reads ``x``: keep a copy of it when running in place
    keeps_input: bool = False
    #: False where Caffe refuses in-place use (AbsVal)
    allows_in_place: bool = True

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0] and not self.allows_in_place:
            raise self.error("does not allow in-place computation (top is the same blob as bottom)")

    def reshape(self, bottom, top) -> None:
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    # ---- helpers for subclasses ---------------------------------------------------
    def buffer(self, name: str, shape, dtype):
        """A cached scratch array, reallocated only when shape or dtype change."""
        buffers = self.__dict__.setdefault("_buffers", {})
        shape = tuple(shape)
        array = buffers.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.xp.empty(shape, dtype=dtype)
            buffers[name] = array
        return array

    def scratch_like(self, blob, name: str = "scratch"):
        return self.buffer(name, blob.shape, blob.dtype)

    def save_input(self, bottom, top) -> None:
        """Call before an in-place forward overwrites ``x`` (only copies when needed)."""
        if self.keeps_input and top[0] is bottom[0]:
            saved = self.scratch_like(bottom[0], "input")
            saved[...] = bottom[0].data

    def input_data(self, bottom, top):
        """``x`` as forward saw it: the saved copy when in place."""
        if self.keeps_input and top[0] is bottom[0]:
            return self._buffers["input"]
        return bottom[0].data

    # ---- the contract ---------------------------------------------------------------
    def forward(self, bottom, top) -> None:
        self.save_input(bottom, top)
        self.compute(bottom[0].data, top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            self.gradient(self.input_data(bottom, top), top[0].data, top[0].diff, bottom[0].diff)

    def compute(self, x, y) -> None:
        raise NotImplementedError(f"layer type {self.type!r} does not implement compute")

    def gradient(self, x, y, dy, dx) -> None:
        raise NotImplementedError(f"layer type {self.type!r} does not implement gradient")
