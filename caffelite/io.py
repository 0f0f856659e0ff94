"""pycaffe's ``caffe.io``: conversions between numpy arrays and Caffe's protobuf messages.

The names and behaviour follow pycaffe so that scripts written for ``caffe.io`` work
unchanged (arrays come back as float64, as pycaffe returns them); errors are
CaffeliteErrors that say what shape or field was expected and what was found (shape and
size errors also ValueErrors, the type pycaffe raises for them).
"""

from __future__ import annotations

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


class ArrayShapeError(CaffeliteError, ValueError):
    """An array or message of the wrong shape or size: a ValueError, as pycaffe's numpy
    reshape raises, and a CaffeliteError."""


# ---- BlobProto <-> array ------------------------------------------------------------


def _blobproto_shape(blob) -> tuple[int, ...]:
    """The legacy num/channels/height/width win when any of them is set (as in pycaffe)."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """The data (or diff) of a BlobProto as a float64 array of the blob's shape.

    Blobs saved in double precision (``double_data``) are read from those fields.
    """
    single = blob.diff if return_diff else blob.data
    double = blob.double_diff if return_diff else blob.double_data
    values = np.asarray(double if len(double) and not len(single) else single, dtype=np.float64)
    shape = _blobproto_shape(blob)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        field = "diff" if return_diff else "data"
        raise ArrayShapeError(
            f"BlobProto of shape {shape} carries {values.size} {field} values, "
            f"expected {int(np.prod(shape, dtype=np.int64))}"
        )
    return values.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto in the ``shape`` form (no legacy 4-D fields), as pycaffe writes it."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ArrayShapeError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """Serialised BlobProtoVector holding one BlobProto per array."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(str) -> list[np.ndarray]:  # pycaffe's argument name
    """The arrays of a serialised BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(blob) for blob in vec.blobs]


# ---- Datum <-> array ----------------------------------------------------------------


def array_to_datum(arr, label=None):
    """A Datum from a (channels, height, width) array: uint8 goes to the ``data`` bytes,
    any other type to ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ArrayShapeError(
            f"array_to_datum needs a 3-D (channels, height, width) array, got shape {arr.shape}"
        )
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum) -> np.ndarray:
    """The pixels of a raw Datum, shape (channels, height, width): uint8 from ``data``,
    float64 from ``float_data``."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise ArrayShapeError(
            "datum_to_array: this Datum holds an encoded (compressed) image; decode it "
            "first, e.g. with PIL.Image.open(io.BytesIO(datum.data))"
        )
    count = int(np.prod(shape, dtype=np.int64))
    if len(datum.data):
        if len(datum.data) != count:
            raise ArrayShapeError(
                f"Datum of shape {shape} carries {len(datum.data)} data bytes, expected {count}"
            )
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    if len(datum.float_data) != count:
        raise ArrayShapeError(
            f"Datum of shape {shape} carries {len(datum.float_data)} float_data values, "
            f"expected {count}"
        )
    return np.asarray(datum.float_data, dtype=np.float64).reshape(shape)


# ---- Preprocessing for deployment: Transformer, image loading, resizing, 10-crop ----
#
# pycaffe's helpers for feeding ordinary images (H x W x K, float in [0, 1], RGB) to a net
# that expects (K x H x W) blobs, e.g. BGR in [0, 255] minus the ImageNet mean. They work
# on the host with numpy, one image at a time, as pycaffe's do.


def _clear_shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _broadcasts_to(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether an array of shape ``small`` can be added in place to one of ``shape``."""
    try:
        return np.broadcast_shapes(small, shape) == tuple(shape)
    except ValueError:
        return False


class Transformer:
    """Per-input preprocessing for a net's input blobs, as pycaffe's ``caffe.io.Transformer``.

    ``inputs`` maps each input blob name to its shape (N, C, H, W), e.g.
    ``{"data": net.blobs["data"].data.shape}``. Each ``set_*`` call configures one step for
    one input; ``preprocess`` applies the configured steps in pycaffe's fixed order and
    ``deprocess`` undoes them (except the resize) in the reverse order.

    Where pycaffe is loose, this one is exact: ``preprocess`` never writes into the caller's
    array, and ``deprocess`` applies the true inverse of the transpose and channel swap
    (pycaffe re-applies the channel swap and composes the transpose with itself, which
    is the inverse only for orders like (2, 1, 0) and (2, 0, 1)).
    """

    def __init__(self, inputs):
        self.inputs = {name: _clear_shape(shape) for name, shape in dict(inputs).items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise CaffeliteError(
                f"{in_!r} is not one of the net inputs: {', '.join(map(repr, self.inputs))}"
            )

    def _image_shape(self, in_) -> tuple[int, int, int, int]:
        shape = self.inputs[in_]
        if len(shape) != 4:
            raise CaffeliteError(
                f"Transformer handles image inputs of shape (N, C, H, W); input {in_!r} "
                f"has shape {shape}"
            )
        return shape

    # -- configuration ------------------------------------------------------------------

    def set_transpose(self, in_, order):
        """Axis order taking the (H, W, K) image to the blob's (K, H, W), usually (2, 0, 1)."""
        self.__check_input(in_)
        order = tuple(int(a) for a in order)
        ndim = len(self.inputs[in_]) - 1
        if sorted(order) != list(range(ndim)):
            raise CaffeliteError(
                f"transpose order for input {in_!r} must be a permutation of the {ndim} axes "
                f"of one image (input shape {self.inputs[in_]}), got {order}"
            )
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order applied after the transpose (channels first): (2, 1, 0) maps
        RGB to BGR, as the reference ImageNet models expect."""
        self.__check_input(in_)
        order = tuple(int(c) for c in order)
        channels = self.inputs[in_][1]
        if len(order) != channels:
            raise CaffeliteError(
                f"channel swap for input {in_!r} needs one entry per input channel "
                f"({channels}, input shape {self.inputs[in_]}), got {order}"
            )
        if sorted(order) != list(range(channels)):
            raise CaffeliteError(
                f"channel swap for input {in_!r} must be a permutation of 0..{channels - 1}, "
                f"got {order}"
            )
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Factor applied before the mean: images load in [0, 1], CaffeNet wants [0, 255]."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean subtracted after the raw scale: per channel, shape (C,), or per pixel,
        shape (C, H, W) equal to the input's (a 2-D (H, W) mean counts as one channel)."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise CaffeliteError(
                    f"per-channel mean for input {in_!r} has {mean.shape[0]} values, the "
                    f"input has {shape[1]} channels (input shape {shape})"
                )
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = (1, *mean.shape) if mean.ndim == 2 else mean.shape
            if len(ms) != 3:
                raise CaffeliteError(
                    f"mean for input {in_!r} must have shape (C,) or (C, H, W), "
                    f"got shape {mean.shape}"
                )
            if ms != shape[1:]:
                raise CaffeliteError(
                    f"mean of shape {mean.shape} does not match input {in_!r}: expected "
                    f"({shape[1]},) or {shape[1:]}; resize the mean (e.g. average it per "
                    f"channel with mean.mean(axis=(1, 2)))"
                )
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Factor applied last, after the mean subtraction (raw_scale comes before it)."""
        self.__check_input(in_)
        self.input_scale[in_] = scale

    # -- application --------------------------------------------------------------------

    def preprocess(self, in_, data):
        """One (H', W', K) image -> float32 (K, H, W) array for input ``in_``.

        Steps, in pycaffe's order: float32, resize to the input's (H, W) when the image's
        first two axes differ, transpose, channel swap, raw scale, subtract mean, input
        scale. Only the configured steps run.
        """
        self.__check_input(in_)
        in_dims = self._image_shape(in_)[2:]
        data = np.asarray(data)
        if data.ndim != 3:
            raise CaffeliteError(
                f"preprocess takes one image of shape (H, W, K); got shape {data.shape} "
                f"for input {in_!r}"
            )
        caffe_in = data.astype(np.float32, copy=False)
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            if caffe_in.shape[0] != len(channel_swap):
                raise CaffeliteError(
                    f"channel swap {channel_swap} for input {in_!r} needs the channels first "
                    f"(set_transpose); the image is now of shape {caffe_in.shape}"
                )
            caffe_in = caffe_in[list(channel_swap)]
        # The in-place steps below must not write into the caller's array.
        if np.may_share_memory(caffe_in, data):
            caffe_in = caffe_in.copy()
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            caffe_in *= raw_scale
        mean = self.mean.get(in_)
        if mean is not None:
            if not _broadcasts_to(mean.shape, caffe_in.shape):
                raise CaffeliteError(
                    f"mean of shape {mean.shape} for input {in_!r} does not fit the image "
                    f"of shape {caffe_in.shape} (is set_transpose missing?)"
                )
            caffe_in -= mean
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """A (K, H, W) or (1, K, H, W) blob -> the (H, W, K) image ``preprocess`` took,
        undoing input scale, mean, raw scale, channel swap and transpose (not the resize)."""
        self.__check_input(in_)
        data = np.asarray(data)
        if data.ndim == 4 and data.shape[0] == 1:  # a batch of one, straight from a blob
            data = data[0]
        dtype = data.dtype if np.issubdtype(data.dtype, np.floating) else np.float32
        decaf_in = np.array(data, dtype=dtype)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        mean = self.mean.get(in_)
        if mean is not None:
            if not _broadcasts_to(mean.shape, decaf_in.shape):
                raise CaffeliteError(
                    f"deprocess for input {in_!r}: data of shape {data.shape} does not fit "
                    f"the mean of shape {mean.shape}"
                )
            decaf_in += mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            decaf_in /= raw_scale
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap)]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in


def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 (H, W, 3) RGB, or (H, W, 1) grey when ``color`` is False,
    scaled to [0, 1] (8-bit by 255, 16-bit by 65535).

    As pycaffe's (``imread(as_grey=not color)``): a grey image becomes three equal
    channels when ``color`` is True, a colour image becomes grey (ITU-R 601 luma) when
    it is False, and an alpha channel is dropped. Needs Pillow (imported here so the
    rest of caffelite works without it).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CaffeliteError(
            "load_image needs Pillow: pip install pillow (or pip install caffelite[image])"
        ) from None
    try:
        with Image.open(filename) as image:
            image.load()
            fmt = image.format
            bands = image.getbands()
            if bands[0] in ("1", "L", "I", "F") and len(bands) <= 2:
                grey = image.getchannel(0) if len(bands) == 2 else image  # drop alpha
                pixels = np.asarray(grey)
            elif color:  # RGB, RGBA, palette, CMYK, YCbCr, ...: RGB without alpha
                pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
            else:
                pixels = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise CaffeliteError(f"load_image: image file {str(filename)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CaffeliteError(
            f"load_image: cannot read {str(filename)!r} as an image: {exc}"
        ) from None
    img = _image_to_unit_float(pixels, fmt).astype(np.float32, copy=False)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.repeat(img, 3, axis=2)
    return img


def _image_to_unit_float(pixels: np.ndarray, fmt) -> np.ndarray:
    """Integer pixels scaled to [0, 1] by their type's range, as skimage's img_as_float."""
    if pixels.dtype == np.bool_ or np.issubdtype(pixels.dtype, np.floating):
        return pixels.astype(np.float64)
    if pixels.dtype == np.int32 and fmt == "PNG":  # 16-bit PNGs may open as 32-bit mode "I"
        return pixels / 65535.0
    return pixels / float(np.iinfo(pixels.dtype).max)


def _linear_taps(n_in: int, n_out: int):
    """Source pixels and weights of a half-pixel-centred linear resize of one axis:
    output i samples input coordinate (i + 0.5) * n_in / n_out - 0.5, clamped to the edge
    pixels (so the corners of an enlarged image equal the original corners)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def _nearest_taps(n_in: int, n_out: int):
    """Input pixel whose extent holds the centre of output pixel i: floor((i + 0.5) * n_in
    / n_out), in integers so that exact halves are not at the mercy of rounding."""
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def _resize_axis(im: np.ndarray, axis: int, n_out: int, interp_order: int) -> np.ndarray:
    n_in = im.shape[axis]
    if n_in == n_out:
        return im
    if interp_order == 0:
        return np.take(im, _nearest_taps(n_in, n_out), axis=axis)
    lo, hi, t = _linear_taps(n_in, n_out)
    t = t.reshape((-1,) + (1,) * (im.ndim - axis - 1))
    low = np.take(im, lo, axis=axis)
    # lo + (hi - lo) * t keeps equal neighbours exactly equal (constant regions stay put)
    return low + (np.take(im, hi, axis=axis) - low) * t


def resize_image(im, new_dims, interp_order: int = 1) -> np.ndarray:
    """An (H, W, K) image resized to ``new_dims`` = (height, width), as float32.

    ``interp_order`` 1 is bilinear, 0 nearest neighbour; pixel centres are aligned as in
    skimage's ``resize`` (half-pixel centres), samples beyond the border take the edge
    pixel (skimage's ``mode="edge"``, and what Pillow and OpenCV do when enlarging), and
    there is no anti-aliasing blur when shrinking, as in the skimage pycaffe was written
    for. Every output is a convex mix of inputs, so the value range is kept and a
    constant image stays exactly constant. Any number of channels (pycaffe switches to
    scipy's zoom beyond 1 or 3 channels; here one method serves all).
    """
    im = np.asarray(im)
    if im.ndim < 2:
        raise CaffeliteError(f"resize_image takes an (H, W, K) image, got shape {im.shape}")
    try:
        new_h, new_w = (int(d) for d in new_dims)
    except (TypeError, ValueError):
        raise CaffeliteError(
            f"resize_image: new_dims must be (height, width), got {new_dims!r}"
        ) from None
    if new_h <= 0 or new_w <= 0 or im.shape[0] == 0 or im.shape[1] == 0:
        raise CaffeliteError(
            f"resize_image cannot resize an image of shape {im.shape} to ({new_h}, {new_w})"
        )
    if interp_order not in (0, 1):
        raise CaffeliteError(
            f"resize_image supports interp_order 0 (nearest) or 1 (bilinear), got {interp_order}"
        )
    out_shape = (new_h, new_w, *im.shape[2:])
    im_min, im_max = im.min(), im.max()
    if im_min == im_max:  # constant image: no interpolation needed
        return np.full(out_shape, im_min, dtype=np.float32)
    resized = im.astype(np.float64)
    resized = _resize_axis(resized, 0, new_h, interp_order)
    resized = _resize_axis(resized, 1, new_w, interp_order)
    return resized.astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """The 10 standard test-time crops of each (H, W, K) image: the top-left, top-right,
    bottom-left and bottom-right corners, the centre, then the same five mirrored left to
    right. Returns float32 (10 * N, crop_h, crop_w, K), image by image."""
    try:
        batch = np.stack([np.asarray(im) for im in images]) if len(images) else None
    except ValueError:
        shapes = sorted({np.shape(im) for im in images})
        raise CaffeliteError(f"oversample needs images of one shape, got shapes {shapes}") from None
    if batch is None or batch.ndim != 4:
        shape = None if batch is None else batch.shape[1:]
        raise CaffeliteError(
            f"oversample takes a non-empty list of (H, W, K) images, got image shape {shape}"
        )
    im_h, im_w = batch.shape[1:3]
    crop_h, crop_w = (int(d) for d in crop_dims)
    if not (0 < crop_h <= im_h and 0 < crop_w <= im_w):
        raise CaffeliteError(
            f"oversample: crop ({crop_h}, {crop_w}) does not fit the images of size "
            f"({im_h}, {im_w})"
        )
    # Centre crop: the window centred on (H / 2, W / 2), its corners rounded down.
    top, left = int(im_h / 2.0 - crop_h / 2.0), int(im_w / 2.0 - crop_w / 2.0)
    origins = [(0, 0), (0, im_w - crop_w), (im_h - crop_h, 0), (im_h - crop_h, im_w - crop_w)]
    origins.append((top, left))
    crops = np.empty((len(batch), 10, crop_h, crop_w, batch.shape[3]), dtype=np.float32)
    for k, (y, x) in enumerate(origins):
        crops[:, k] = batch[:, y : y + crop_h, x : x + crop_w]
    crops[:, 5:] = crops[:, :5, :, ::-1]
    return crops.reshape(-1, crop_h, crop_w, batch.shape[3])
