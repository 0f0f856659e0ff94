"""Image decoding and encoding as Caffe does it with OpenCV, done with Pillow.

Caffe's pixels are uint8 (channels, height, width) in OpenCV's channel order: BGR
for colour, BGRA when an alpha channel is kept. Three decode modes mirror
OpenCV's imread/imdecode flags:

- ``color=True`` (IMREAD_COLOR): three channels BGR; grey is replicated, alpha
  dropped, 16-bit samples divided by 256.
- ``color=False`` (IMREAD_GRAYSCALE): one channel (JPEGs give libjpeg's own luma,
  as OpenCV's decoder does).
- ``color=None`` (IMREAD_UNCHANGED, Caffe's DecodeDatumToCVMatNative): the file's
  own layout: 1 channel for grey, 3 for colour, 4 (BGRA) when the file has alpha
  (grey+alpha too, as OpenCV expands it). 16-bit files stay 16-bit in OpenCV, which
  Caffe then refuses; here that is an error that says to force a colour mode.

Resizing is OpenCV's INTER_LINEAR (half-pixel centres, no anti-aliasing), which is
what Caffe's ``cv::resize`` calls use, via ``caffelite.io.resize_image``.
Pillow is imported on first use, so the rest of caffelite works without it.
"""

from __future__ import annotations

import io

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.files import read_bytes

#: OpenCV's default JPEG quality for imencode, which convert_imageset --encoded uses.
JPEG_QUALITY = 95


def _pil():
    try:
        import PIL.Image
    except ImportError:
        raise CaffeliteError(
            "decoding images needs Pillow: pip install pillow (or pip install caffelite[image])"
        ) from None
    return PIL.Image


def _decode_pil(image_module, image, color: bool | None, what: str) -> np.ndarray:
    """An open Pillow image as Caffe's uint8 (C, H, W), BGR(A) order."""
    mode = image.mode
    if color is False and image.format == "JPEG" and mode != "L":
        image.draft("L", None)  # libjpeg's grey output, as OpenCV asks for it
        mode = image.mode
    if mode.startswith("I") or mode == "F":
        if color is None:
            raise CaffeliteError(
                f"{what} is a {mode} (16-bit or float) image; Caffe needs 8-bit pixels: "
                "set force_color or force_gray to convert it"
            )
        eight_bit = np.clip(np.asarray(image).astype(np.int64) >> 8, 0, 255)  # as OpenCV
        image = image_module.fromarray(eight_bit.astype(np.uint8))
        mode = "L"
    if color is None:
        has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
        # OpenCV expands palettes to colour, and grey+alpha to BGRA
        target = "L" if mode in ("1", "L") else "RGBA" if has_alpha else "RGB"
    else:
        target = "RGB" if color else "L"
    if image.mode != target:
        image = image.convert(target)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        return pixels[None].copy()
    order = [2, 1, 0, 3][: pixels.shape[2]]  # RGB(A) -> BGR(A)
    return np.ascontiguousarray(pixels[:, :, order].transpose(2, 0, 1))


def decode_image(data: bytes, color: bool | None = None, what: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, BMP, ...) as uint8 (C, H, W) in Caffe's BGR order;
    ``color`` as in the module docstring. ``what`` names the source in errors."""
    image_module = _pil()
    try:
        with image_module.open(io.BytesIO(data)) as image:
            return _decode_pil(image_module, image, color, what)
    except CaffeliteError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ...
        raise CaffeliteError(f"cannot decode {what}: {type(exc).__name__}: {exc}") from None


def read_image(path: str, height: int = 0, width: int = 0, is_color: bool = True) -> np.ndarray:
    """An image file as uint8 (C, H, W), BGR for colour (Caffe's ReadImageToCVMat),
    resized to ``height`` x ``width`` (INTER_LINEAR) when both are positive."""
    pixels = decode_image(read_bytes(path, "image"), bool(is_color), what=f"image {path!r}")
    if height > 0 and width > 0:
        pixels = resize_pixels(pixels, height, width)
    return pixels


def resize_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (C, H, W) resized as cv::resize(INTER_LINEAR) does, rounded to uint8."""
    from caffelite.io import resize_image

    if pixels.shape[1:] == (height, width):
        return pixels
    resized = resize_image(pixels.transpose(1, 2, 0), (height, width))
    return np.ascontiguousarray(np.rint(resized).astype(np.uint8).transpose(2, 0, 1))


def encode_image(pixels: np.ndarray, encoding: str) -> bytes:
    """uint8 (C, H, W) BGR(A) or grey pixels encoded as ``encoding`` ('jpg', 'png', ...),
    like cv::imencode (JPEG at OpenCV's default quality 95)."""
    image_module = _pil()
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] not in (1, 3, 4):
        raise CaffeliteError(
            f"encode_image needs uint8 (1, 3 or 4, H, W) pixels, got {pixels.dtype} {pixels.shape}"
        )
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(encoding.lower(), encoding.upper())
    if pixels.shape[0] == 1:
        image = image_module.fromarray(pixels[0])
    else:
        order = [2, 1, 0, 3][: pixels.shape[0]]
        image = image_module.fromarray(np.ascontiguousarray(pixels[order].transpose(1, 2, 0)))
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (KeyError, ValueError, OSError) as exc:
        raise CaffeliteError(f"cannot encode an image as {encoding!r}: {exc}") from None
    return buffer.getvalue()
