"""Blob: the n-d array pair (``data``, ``diff``) that layers read and write.

Memory is kept in flat buffers that only grow, so reshaping to a size that fits
reuses the allocation (as Caffe's Blob::Reshape does) and steady-state training
allocates nothing. ``diff`` is allocated on first use: inference never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy

from caffelite import backend, limits
from caffelite.errors import CaffeliteError

MAX_BLOB_AXES = 32


class _Count(int):
    """``blob.count`` works both as pycaffe's property and as Caffe's ``count(start, end)``."""

    def __new__(cls, shape: tuple[int, ...]):
        obj = super().__new__(cls, math.prod(shape))
        obj._shape = shape
        return obj

    def __call__(self, start: int = 0, end: int | None = None) -> int:
        return math.prod(self._shape[start:end])


def _as_shape(args) -> tuple[int, ...]:
    """Accept ``reshape(2, 3)``, ``reshape((2, 3))``, ``reshape([2, 3])`` or a BlobShape."""
    if len(args) == 1:
        (arg,) = args
        if hasattr(arg, "dim"):
            args = tuple(arg.dim)
        elif isinstance(arg, Iterable):
            args = tuple(arg)
    shape = tuple(int(d) for d in args)
    if len(shape) > MAX_BLOB_AXES:
        raise CaffeliteError(f"blob shape {shape} has more than {MAX_BLOB_AXES} axes")
    if any(d < 0 for d in shape):
        raise CaffeliteError(f"blob shape {shape} has a negative dimension")
    return shape


class Blob:
    """Holds ``data`` and its gradient ``diff`` with the same shape and float type."""

    def __init__(self, *shape, dtype=None):
        self.dtype = numpy.dtype(dtype) if dtype is not None else backend.default_dtype()
        self._shape: tuple[int, ...] = ()
        self._data_buf = None
        self._diff_buf = None
        self._data = None
        self._diff = None
        self.reshape(*shape) if shape else self.reshape(())

    # ---- shape -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    @property
    def count(self) -> _Count:
        return _Count(self._shape)

    def canonical_axis_index(self, axis: int) -> int:
        """Map a possibly negative axis to ``0..num_axes-1``, with a clear error."""
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise CaffeliteError(f"axis {axis} out of range for a {n}-axis blob {self._shape}")
        return axis + n if axis < 0 else axis

    def shape_at(self, axis: int) -> int:
        return self._shape[self.canonical_axis_index(axis)]

    def _legacy_shape(self, index: int) -> int:
        if len(self._shape) > 4:
            raise CaffeliteError(f"legacy accessors need at most 4 axes; blob is {self._shape}")
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self._legacy_shape(0))
    channels = property(lambda self: self._legacy_shape(1))
    height = property(lambda self: self._legacy_shape(2))
    width = property(lambda self: self._legacy_shape(3))

    def reshape(self, *shape) -> None:
        """Change the shape; memory is reused when the new size fits the old buffer."""
        shape = _as_shape(shape)
        count = math.prod(shape)
        if self._data_buf is None or self._data_buf.size < count:
            try:
                limits.check_allocation(shape, self.dtype.itemsize)
            except limits.SizeLimitError as exc:
                exc.blob = self  # the Net names the layer and the blob
                raise
            self._data_buf = backend.xp().zeros(max(count, 1), dtype=self.dtype)
            self._diff_buf = None
        self._shape = shape
        self._data = self._data_buf[:count].reshape(shape)
        if self._diff_buf is not None and self._diff_buf.size < count:
            self._diff_buf = None
        self._diff = None if self._diff_buf is None else self._diff_buf[:count].reshape(shape)

    def reshape_like(self, other: Blob) -> None:
        self.reshape(other.shape)

    # ---- data and diff -----------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data[...] = value

    @property
    def diff(self):
        if self._diff is None:
            count = len(self._data_buf)
            self._diff_buf = backend.xp().zeros(count, dtype=self.dtype)
            self._diff = self._diff_buf[: self._data.size].reshape(self._shape)
        return self._diff

    @diff.setter
    def diff(self, value) -> None:
        self.diff[...] = value

    @property
    def has_diff(self) -> bool:
        return self._diff is not None

    def share_data(self, other: Blob) -> None:
        """Use ``other``'s data memory (same count), as Flatten and Reshape do."""
        self._check_same_count(other)
        self._data_buf = other._data_buf
        self._data = other._data.reshape(self._shape)

    def share_diff(self, other: Blob) -> None:
        self._check_same_count(other)
        diff = other.diff
        self._diff_buf = other._diff_buf
        self._diff = diff.reshape(self._shape)

    def _check_same_count(self, other: Blob) -> None:
        if self.count != other.count:
            raise CaffeliteError(
                f"cannot share memory between blobs of shapes {self._shape} and {other.shape}"
            )

    # ---- serialisation -----------------------------------------------------
    def to_proto(self, write_diff: bool = False):
        """A BlobProto with the ``shape`` form (double fields for float64 blobs)."""
        from caffelite.proto import caffe_pb2

        proto = caffe_pb2.BlobProto()
        proto.shape.dim.extend(self._shape)
        double = self.dtype == numpy.float64
        fields = [("double_data" if double else "data", self._data)]
        if write_diff:
            fields.append(("double_diff" if double else "diff", self.diff))
        for name, values in fields:
            set_packed(proto, name, values)
        return proto

    def from_proto(self, proto, reshape: bool = True) -> None:
        """Load a BlobProto in the ``shape`` form or the legacy 4-d form."""
        shape = proto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif not shapes_match(shape, self._shape):
            raise CaffeliteError(f"blob shape mismatch: file has {shape}, blob has {self._shape}")
        values = _proto_values(proto, "data")
        if values.size != self.count:
            raise CaffeliteError(
                f"BlobProto of shape {shape} carries {values.size} values, expected {self.count}"
            )
        self._data[...] = backend.xp().asarray(values.reshape(self._shape))
        diff = _proto_values(proto, "diff")
        if diff.size == self.count and diff.size:
            self.diff[...] = backend.xp().asarray(diff.reshape(self._shape))

    def __repr__(self) -> str:
        return f"Blob(shape={self._shape}, dtype={self.dtype.name})"


def set_packed(proto, field_name: str, values) -> None:
    """Fill the packed repeated float/double field ``field_name`` of ``proto`` with ``values``.

    The field is handed to protobuf as its wire bytes (tag, length, little-endian
    values), which it parses in C: no Python float per value, so snapshots of large
    nets neither take long nor make a memory spike.
    """
    field = proto.DESCRIPTOR.fields_by_name[field_name]
    dtype = "<f8" if field.type == field.TYPE_DOUBLE else "<f4"
    payload = numpy.ascontiguousarray(backend.to_numpy(values), dtype=dtype).tobytes()
    proto.ClearField(field_name)
    if payload:
        proto.MergeFromString(_varint(field.number << 3 | 2) + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def shapes_match(file_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Equal shapes, or a legacy 4-d shape equal to ``shape`` padded with leading 1s
    (Caffe's Blob::ShapeEquals: an old (1, 1, N, K) weight is today's (N, K))."""
    if file_shape == shape:
        return True
    if len(file_shape) == 4 and len(shape) <= 4:
        return file_shape == (1,) * (4 - len(shape)) + tuple(shape)
    return False


def proto_shape(proto) -> tuple[int, ...]:
    """The shape a BlobProto declares: legacy num/channels/height/width win if present."""
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim)


def _proto_values(proto, kind: str) -> numpy.ndarray:
    single = getattr(proto, kind)
    double = getattr(proto, "double_" + kind)
    if len(double) and not len(single):
        return numpy.asarray(double, dtype=numpy.float64)
    return numpy.asarray(single, dtype=numpy.float32)
