"""WindowData: R-CNN style training windows cut from images (Caffe's WindowDataLayer).

The window file (``window_data_param.source``) repeats, for image 0, 1, 2, ...::

    # image_index
    image_path          (root_folder + image_path, as Caffe joins them)
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2     (num_windows lines; corners inclusive, 0-based)

A window whose ``overlap`` is at least ``fg_threshold`` is foreground (its class must be
positive); one below ``bg_threshold`` is background (label 0); others are dropped. Each
batch holds ``batch_size - int(batch_size * fg_fraction)`` background windows, then the
foreground ones, each drawn uniformly with replacement from its set. A window is cut
out and warped (OpenCV's INTER_LINEAR) to ``crop_size`` x ``crop_size``; with
``context_pad`` or ``crop_mode: "square"`` it is first grown so that, once warped, a
border of ``context_pad`` pixels of context surrounds it, and the part that falls
outside the image is left at 0. ``mirror`` flips a window at random; the mean (a
``mean_file`` image, read at the window's place in its centre crop, or ``mean_value``)
is subtracted and the result multiplied by ``scale``. Images are read in colour
(BGR), as Caffe's ``cv::imread``. All random draws come from :mod:`caffelite.rng`.

Differences from Caffe: images are read in ``forward`` rather than by a prefetch
thread (as :mod:`caffelite.layers.image_data`); ``scale``, ``crop_size``, ``mirror``
and ``mean_file`` may be given in ``transform_param`` or (the older place)
``window_data_param`` -- Caffe's loop reads ``scale`` only from the latter and the
others only from the former; an unreadable image, an image index out of order or a
window outside its image is an error rather than a short batch or a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from caffelite.data_transformer import load_mean_file
from caffelite.errors import CaffeliteError
from caffelite.files import read_bytes
from caffelite.image_codec import decode_image, resize_pixels
from caffelite.layer import Layer, register_layer
from caffelite.rng import get_rng

CHANNELS = 3  # Caffe reads every image with cv::IMREAD_COLOR


@dataclass(frozen=True)
class WindowImage:
    path: str
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class Window:
    image: int
    label: int
    overlap: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2, inclusive
    line: int


class _Tokens:
    """The whitespace-separated fields of a window file, with their line numbers."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.items = [
            (token, number)
            for number, line in enumerate(text.splitlines(), start=1)
            for token in line.split()
        ]
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.items)

    def take(self, convert, what: str):
        if not self.more():
            last = self.items[-1][1] if self.items else 1
            raise CaffeliteError(f"window file {self.source!r}, line {last}: ends before {what}")
        token, number = self.items[self.pos]
        self.pos += 1
        try:
            return convert(token), number
        except ValueError:
            raise CaffeliteError(
                f"window file {self.source!r}, line {number}: expected {what}, got {token!r}"
            ) from None


def read_window_file(source: str, root_folder: str, fg_threshold: float, bg_threshold: float):
    """``(images, foreground windows, background windows)`` of a window file."""
    try:
        with open(source) as handle:
            tokens = _Tokens(source, handle.read())
    except OSError as exc:
        raise CaffeliteError(f"cannot open window file {source!r}: {exc.strerror}") from None
    if not tokens.more():
        raise CaffeliteError(f"window file {source!r} is empty")
    images, fg, bg = [], [], []
    while tokens.more():
        hashtag, line = tokens.take(str, "'#' starting an image record")
        if hashtag != "#":
            raise CaffeliteError(
                f"window file {source!r}, line {line}: expected '#' starting an image "
                f"record, got {hashtag!r}"
            )
        index, line = tokens.take(int, "the image index")
        if index != len(images):
            raise CaffeliteError(
                f"window file {source!r}, line {line}: image index {index}, expected "
                f"{len(images)} (images are numbered 0, 1, 2, ... in order)"
            )
        path, _ = tokens.take(str, "the image path")
        channels, line = tokens.take(int, "the image's channels")
        if channels != CHANNELS:
            raise CaffeliteError(
                f"window file {source!r}, line {line}: image {index} has {channels} channels; "
                f"WindowData reads images in colour ({CHANNELS} channels, as Caffe)"
            )
        height, _ = tokens.take(int, "the image height")
        width, _ = tokens.take(int, "the image width")
        images.append(WindowImage(root_folder + path, channels, height, width))
        count, line = tokens.take(int, "the number of windows")
        if count < 0:
            raise CaffeliteError(f"window file {source!r}, line {line}: {count} windows")
        for _ in range(count):
            label, line = tokens.take(int, "a window's class_index")
            overlap, _ = tokens.take(float, "a window's overlap")
            box = tuple(
                tokens.take(int, f"a window's {name}")[0] for name in ("x1", "y1", "x2", "y2")
            )
            if overlap >= fg_threshold:
                if label <= 0:
                    raise CaffeliteError(
                        f"window file {source!r}, line {line}: a foreground window (overlap "
                        f"{overlap} >= fg_threshold {fg_threshold}) needs a class above 0, "
                        f"got {label}"
                    )
                fg.append(Window(index, label, overlap, box, line))
            elif overlap < bg_threshold:
                bg.append(Window(index, 0, 0.0, box, line))
    return images, fg, bg


def _round(value: float) -> int:
    """C's ``round``: halves away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


@dataclass(frozen=True)
class Warp:
    """Where a window goes: the image region ``roi`` (x1, y1, x2, y2 inclusive) is resized
    to ``size`` (height, width) and placed at ``offset`` (row, column) in the crop."""

    roi: tuple[int, int, int, int]
    size: tuple[int, int]
    offset: tuple[int, int]


def warp_geometry(box, image_hw, crop_size: int, context_pad: int, square: bool, mirror: bool):
    """Caffe's window arithmetic: grow ``box`` for context (and to a square), clip it to
    the image, and size and place the clipped part so the whole grown box would fill
    the crop. ``None`` when the grown box misses the image entirely."""
    x1, y1, x2, y2 = box
    rows, cols = image_hw
    if not (context_pad > 0 or square):
        return Warp(box, (crop_size, crop_size), (0, 0))
    context_scale = crop_size / (crop_size - 2 * context_pad)
    half_h, half_w = (y2 - y1 + 1) / 2.0, (x2 - x1 + 1) / 2.0
    centre_x, centre_y = x1 + half_w, y1 + half_h
    if square:
        half_h = half_w = max(half_h, half_w)
    x1, x2 = _round(centre_x - half_w * context_scale), _round(centre_x + half_w * context_scale)
    y1, y2 = _round(centre_y - half_h * context_scale), _round(centre_y + half_h * context_scale)
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    if x1 > x2 or y1 > y2:
        return None
    scale_x, scale_y = crop_size / unclipped_w, crop_size / unclipped_h
    height, width = _round((y2 - y1 + 1) * scale_y), _round((x2 - x1 + 1) * scale_x)
    pad_h = _round(pad_y1 * scale_y)
    pad_w = _round((pad_x2 if mirror else pad_x1) * scale_x)  # the padding flips too
    height, width = min(height, crop_size - pad_h), min(width, crop_size - pad_w)
    return Warp((x1, y1, x2, y2), (height, width), (pad_h, pad_w))


@register_layer("WindowData")
class WindowDataLayer(Layer):
    """Tops: warped windows (N, 3, crop_size, crop_size) and their labels (N,)."""

    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 2

    def setup(self, bottom, top):
        p, t = self.layer_param.window_data_param, self.layer_param.transform_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error(
                f"window_data_param.batch_size must be positive, got {self.batch_size}"
            )
        self.crop_size = int(self._either("crop_size"))
        self.mirror = bool(self._either("mirror"))
        self.scale = float(self._either("scale"))
        self.context_pad = int(p.context_pad)
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"crop_mode must be 'warp' or 'square', got {p.crop_mode!r}")
        self.square = p.crop_mode == "square"
        if self.crop_size <= 0:
            raise self.error(
                "WindowData needs a positive transform_param.crop_size (the warped size)"
            )
        if 2 * self.context_pad >= self.crop_size:
            raise self.error(
                f"context_pad {self.context_pad} leaves nothing of a {self.crop_size}-pixel crop"
            )
        self.num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        if not 0 <= self.num_fg <= self.batch_size:
            raise self.error(f"fg_fraction must be in [0, 1], got {p.fg_fraction}")
        mean_file = self._either("mean_file")
        if mean_file and len(t.mean_value):
            raise self.error("specify either mean_file or mean_value, not both")
        try:
            self.mean = load_mean_file(mean_file) if mean_file else None
            root = p.root_folder
            self.images, self.fg, self.bg = read_window_file(
                p.source, root, p.fg_threshold, p.bg_threshold
            )
            self.cache = (
                [read_bytes(im.path, "image") for im in self.images] if p.cache_images else None
            )
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        self._check_mean(np.asarray(t.mean_value, dtype=np.float32))
        for kind, windows, wanted in (
            ("foreground", self.fg, self.num_fg),
            ("background", self.bg, self.batch_size - self.num_fg),
        ):
            if wanted and not windows:
                raise self.error(
                    f"a batch takes {wanted} {kind} windows, but {p.source!r} has none "
                    f"(fg_threshold {p.fg_threshold}, bg_threshold {p.bg_threshold})"
                )
        top[0].reshape(self.batch_size, CHANNELS, self.crop_size, self.crop_size)
        top[1].reshape(self.batch_size)

    def _either(self, name: str):
        """A field from transform_param, else from window_data_param (its older place)."""
        t, p = self.layer_param.transform_param, self.layer_param.window_data_param
        if t.HasField(name) and p.HasField(name) and getattr(t, name) != getattr(p, name):
            raise self.error(
                f"{name} is set differently in transform_param ({getattr(t, name)}) and "
                f"window_data_param ({getattr(p, name)}); set it once"
            )
        return getattr(t, name) if t.HasField(name) else getattr(p, name)

    def _check_mean(self, mean_values: np.ndarray) -> None:
        self.mean_values = None
        if mean_values.size:
            if mean_values.size not in (1, CHANNELS):
                raise self.error(
                    f"give 1 mean_value or {CHANNELS} (one per channel), got {mean_values.size}"
                )
            self.mean_values = np.broadcast_to(mean_values, (CHANNELS,)).reshape(-1, 1, 1)
        if self.mean is not None:
            channels, height, width = self.mean.shape
            self.mean_off = (width - self.crop_size) // 2  # Caffe centres by the width
            if channels != CHANNELS or self.mean_off < 0 or height < self.mean_off + self.crop_size:
                raise self.error(
                    f"the mean image has shape {self.mean.shape}; WindowData needs "
                    f"{CHANNELS} channels and at least {self.crop_size}x{self.crop_size} "
                    "(its centre crop is subtracted)"
                )

    def reshape(self, bottom, top):
        """The tops keep the shape set up in ``setup``."""

    def forward(self, bottom, top):
        rng = get_rng()
        crop = self.crop_size
        data = np.zeros((self.batch_size, CHANNELS, crop, crop), dtype=np.float32)
        labels = np.empty(self.batch_size, dtype=np.float32)
        drawn = [(self.bg, self.batch_size - self.num_fg), (self.fg, self.num_fg)]
        item = 0
        for windows, count in drawn:
            for _ in range(count):
                window = windows[int(rng.integers(len(windows)))]
                flip = self.mirror and bool(rng.integers(2))
                self._fill(data[item], window, flip)
                labels[item] = window.label
                item += 1
        xp = self.xp
        top[0].data[...] = xp.asarray(data)
        top[1].data[...] = xp.asarray(labels)

    def _fill(self, out: np.ndarray, window: Window, flip: bool) -> None:
        """Warp ``window`` into ``out`` (3, crop, crop), zeros outside the warped part."""
        image = self._read(window.image)
        source = self.layer_param.window_data_param.source
        where = (
            f"window {window.box} of {self.images[window.image].path!r} "
            f"({source!r}, line {window.line})"
        )
        warp = warp_geometry(
            window.box, image.shape[1:], self.crop_size, self.context_pad, self.square, flip
        )
        x1, y1, x2, y2 = warp.roi if warp else window.box
        if warp is None or not (0 <= x1 <= x2 < image.shape[2] and 0 <= y1 <= y2 < image.shape[1]):
            raise self.error(f"{where} lies outside the {image.shape[2]}x{image.shape[1]} image")
        if min(warp.size) <= 0:
            raise self.error(f"{where} warps to an empty {warp.size} region")
        pixels = resize_pixels(np.ascontiguousarray(image[:, y1 : y2 + 1, x1 : x2 + 1]), *warp.size)
        if flip:
            pixels = pixels[:, :, ::-1]
        (h, w), (r, c) = warp.size, warp.offset
        region = out[:, r : r + h, c : c + w]
        region[...] = pixels
        if self.mean is not None:
            off = self.mean_off
            region -= self.mean[:, r + off : r + off + h, c + off : c + off + w]
        elif self.mean_values is not None:
            region -= self.mean_values
        region *= self.scale

    def _read(self, index: int) -> np.ndarray:
        path = self.images[index].path
        try:
            data = self.cache[index] if self.cache is not None else read_bytes(path, "image")
            return decode_image(data, True, what=f"image {path!r}")
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
