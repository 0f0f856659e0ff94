"""Caffe's DataTransformer: mean subtraction, scaling, cropping and mirroring of input
images, vectorised over a whole batch.

For every image Caffe computes ``(pixel - mean) * scale`` on a crop of the image,
optionally flipped left-right. The mean (a full-size mean image or one value per
channel) is taken at the pixel's position in the *uncropped* image, so crop and
mirror move the mean together with the pixels. Crops are random in TRAIN and
centred in TEST; mirroring is random (a fair coin per image) in both phases when
``mirror`` is set, exactly as in Caffe.

The transform runs on the host (numpy): data layers call it from their prefetch
thread and copy the finished float batch to the device in one go.
"""

from __future__ import annotations

import os

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.layer import TRAIN
from caffelite.proto import caffe_pb2
from caffelite.rng import get_rng


def load_mean_file(path: str) -> np.ndarray:
    """The (channels, height, width) float32 mean image of a binaryproto BlobProto."""
    from caffelite.io import blobproto_to_array

    if not os.path.isfile(path):
        raise CaffeliteError(f"mean_file {path!r} does not exist")
    blob = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except Exception as exc:  # protobuf's DecodeError, and I/O errors
        raise CaffeliteError(f"mean_file {path!r} is not a binary BlobProto: {exc}") from exc
    mean = blobproto_to_array(blob).astype(np.float32)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise CaffeliteError(
            f"mean_file {path!r} holds a blob of shape {mean.shape}; expected "
            "(1, channels, height, width) or (channels, height, width)"
        )
    return mean


class DataTransformer:
    """Applies a TransformationParameter to uint8 or float image batches (N, C, H, W)."""

    def __init__(self, param=None, phase: int = TRAIN, rng: np.random.Generator | None = None):
        self.param = param if param is not None else caffe_pb2.TransformationParameter()
        self.phase = phase
        #: Generator for crops and flips; ``None`` means the global ``get_rng()``.
        self.rng = rng
        p = self.param
        if p.HasField("mean_file") and len(p.mean_value):
            raise CaffeliteError(
                "transform_param: specify either mean_file or mean_value, not both"
            )
        if p.force_color and p.force_gray:
            raise CaffeliteError("transform_param: set force_color or force_gray, not both")
        #: How encoded images are decoded (Caffe's DecodeDatum flags): True as colour,
        #: False as grey, None with the channels the file has.
        self.decode_color = True if p.force_color else False if p.force_gray else None
        self.scale = np.float32(p.scale)
        self.crop_size = int(p.crop_size)
        self.mirror = bool(p.mirror)
        self.mean = load_mean_file(p.mean_file) if p.HasField("mean_file") else None
        self.mean_values = np.asarray(p.mean_value, dtype=np.float32) if len(p.mean_value) else None

    @property
    def needs_rng(self) -> bool:
        """Whether transforms draw random numbers (Caffe's InitRand condition)."""
        return self.mirror or (self.phase == TRAIN and self.crop_size > 0)

    def infer_blob_shape(self, shape) -> tuple[int, ...]:
        """The transformed shape of an image (C, H, W) or a batch (N, C, H, W); checks that
        the crop, mean image and mean values fit images of that shape."""
        shape = tuple(int(d) for d in shape)
        if len(shape) not in (3, 4):
            raise CaffeliteError(f"expected an image shape (C, H, W) or (N, C, H, W), got {shape}")
        channels, height, width = shape[-3:]
        self._check_crop(height, width)
        self._check_mean(channels, height, width)
        if self.crop_size:
            return shape[:-2] + (self.crop_size, self.crop_size)
        return shape

    def _check_crop(self, height: int, width: int) -> None:
        if self.crop_size > min(height, width):
            raise CaffeliteError(
                f"crop_size {self.crop_size} is larger than the {height}x{width} input images"
            )

    def _check_mean(self, channels: int, height: int, width: int) -> None:
        if self.mean is not None and self.mean.shape != (channels, height, width):
            raise CaffeliteError(
                f"mean_file {self.param.mean_file!r} has shape {self.mean.shape}, but the "
                f"images are {(channels, height, width)}"
            )
        if self.mean_values is not None and self.mean_values.size not in (1, channels):
            raise CaffeliteError(
                f"transform_param has {self.mean_values.size} mean_value entries for "
                f"{channels}-channel images; give one value or one per channel"
            )

    def transform(self, images, out=None, rng: np.random.Generator | None = None) -> np.ndarray:
        """Transform ``images`` (N, C, H, W) (or one image (C, H, W)) into ``out``.

        ``out`` (float32 unless given) must have the shape ``infer_blob_shape`` gives;
        it is allocated when omitted. Returns ``out``.
        """
        x = np.asarray(images)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4:
            raise CaffeliteError(
                f"expected images of shape (N, C, H, W) or (C, H, W), got {np.shape(images)}"
            )
        n, c, h, w = x.shape
        out_shape = self.infer_blob_shape(x.shape)
        if out is None:
            out = np.empty(out_shape, dtype=np.float32)
        elif single and out.shape == out_shape[1:]:
            out = out[None]
        if out.shape != out_shape:
            raise CaffeliteError(
                f"transform output has shape {out.shape}, expected {out_shape} for input {x.shape}"
            )

        rows, cols = self._window(n, h, w, rng if rng is not None else (self.rng or get_rng()))
        if rows is None:
            np.copyto(out, x, casting="unsafe")
            mean = self.mean
        else:
            chan = np.arange(c)[None, :, None, None]
            r = rows[:, None, :, None]
            s = cols[:, None, None, :]
            out[...] = x[np.arange(n)[:, None, None, None], chan, r, s]
            mean = None if self.mean is None else self.mean[chan, r, s]
        if mean is not None:
            out -= mean
        elif self.mean_values is not None:
            values = self.mean_values
            out -= values[0] if values.size == 1 else values.reshape(-1, 1, 1)
        if self.scale != 1:
            out *= self.scale
        return out[0] if single else out

    def _window(self, n: int, h: int, w: int, rng) -> tuple:
        """Per-image source rows (N, H') and columns (N, W'), or (None, None) for identity.

        Mirroring reverses an image's column list, so crop and flip are one gather.
        """
        flip = rng.integers(0, 2, size=n).astype(bool) if self.mirror else None
        crop = self.crop_size
        if crop:
            if self.phase == TRAIN:
                h_off = rng.integers(0, h - crop + 1, size=n)
                w_off = rng.integers(0, w - crop + 1, size=n)
            else:
                h_off = np.full(n, (h - crop) // 2)
                w_off = np.full(n, (w - crop) // 2)
            rows = h_off[:, None] + np.arange(crop)
            cols = w_off[:, None] + np.arange(crop)
        elif flip is not None and flip.any():
            rows = np.broadcast_to(np.arange(h), (n, h))
            cols = np.broadcast_to(np.arange(w), (n, w))
        else:
            return None, None
        if flip is not None:
            cols = np.where(flip[:, None], cols[:, ::-1], cols)
        return rows, cols
