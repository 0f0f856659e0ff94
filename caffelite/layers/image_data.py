"""ImageData: images and integer labels from a list file (Caffe's ImageDataLayer).

Each line of ``image_data_param.source`` is ``<path> <label>``; the path (which may
contain spaces: the label is after the last one) is read below ``root_folder``.
Images are decoded with Pillow, as colour (3 channels in Caffe's BGR order) or grey
(``is_color: false``), resized to ``new_height`` x ``new_width`` when both are set,
then transformed batch-wise by ``transform_param`` (crop, mirror, mean, scale).

A batch takes the next ``batch_size`` lines, wrapping to the first line at the end
(reshuffled first when ``shuffle`` is set); the list is also shuffled once at
setup. ``rand_skip`` skips a random number of lines at the start. All images of a
batch must have one size; the batch's size follows its first image, so a net with
``batch_size: 1`` accepts images of any size.

Images are decoded and resized as OpenCV does (``caffelite.image_codec``).
Difference from Caffe: images are read in ``forward`` rather than by a prefetch
thread.
"""

from __future__ import annotations

import numpy as np

from caffelite.data_transformer import DataTransformer
from caffelite.errors import CaffeliteError
from caffelite.image_codec import read_image
from caffelite.layer import Layer, register_layer
from caffelite.parallel.world import record_share
from caffelite.resume import is_permutation
from caffelite.rng import get_rng


def read_image_list(source: str) -> list[tuple[str, int]]:
    """``(path, label)`` pairs from a list file of ``path label`` lines."""
    if not source:
        raise CaffeliteError("image_data_param.source is empty; give the path of a list file")
    try:
        with open(source) as handle:
            text = handle.read()
    except OSError as exc:
        raise CaffeliteError(f"cannot open image list {source!r}: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        try:
            if len(parts) != 2:
                raise ValueError
            entries.append((parts[0], int(parts[1])))
        except ValueError:
            raise CaffeliteError(
                f"{source}:{number}: expected '<image path> <integer label>', got {line!r}"
            ) from None
    if not entries:
        raise CaffeliteError(f"image list {source!r} lists no images")
    return entries


@register_layer("ImageData")
class ImageDataLayer(Layer):
    """Tops: images (N, C, H, W) after transform_param, and labels (N,)."""

    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 2

    def setup(self, bottom, top):
        p = self.layer_param.image_data_param
        self.new_height, self.new_width = int(p.new_height), int(p.new_width)
        if (self.new_height > 0) != (self.new_width > 0):
            raise self.error(
                "set new_height and new_width together (or neither); got "
                f"new_height {self.new_height}, new_width {self.new_width}"
            )
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error(f"image_data_param.batch_size must be positive, got {self.batch_size}")
        self.is_color = bool(p.is_color)
        self.shuffle = bool(p.shuffle)
        root = p.root_folder
        self.root_folder = root + "/" if root and not root.endswith("/") else root
        try:
            self.transformer = DataTransformer(self.layer_param.transform_param, self.phase)
            self._listed = read_image_list(p.source)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        self._order = np.arange(len(self._listed))  # lines = the list file's, in this order
        self.lines = list(self._listed)
        if self.shuffle:
            self._shuffle_lines()
        self._pos = 0
        if p.rand_skip:
            skip = int(get_rng().integers(p.rand_skip))
            if skip >= len(self.lines):
                raise self.error(
                    f"rand_skip drew {skip}, but {p.source!r} lists only {len(self.lines)} images"
                )
            self._pos = skip
        # In a data-parallel job, rank r of N reads lines r, r+N, ... (as Caffe's Skip).
        first_line, self._stride = record_share(self.phase)
        self._advance(first_line)
        first = self._read(self._pos)
        shape = self._infer_shape((self.batch_size,) + first.shape)
        top[0].reshape(shape)
        top[1].reshape(self.batch_size)

    def _shuffle_lines(self) -> None:
        self._order = self._order[get_rng().permutation(len(self._order))]
        self.lines = [self._listed[i] for i in self._order]

    # ---- caffelite.resume ----------------------------------------------------------
    def resume_state(self) -> dict:
        return {"order": self._order.tolist() if self.shuffle else None, "pos": self._pos}

    def restore_resume_state(self, state: dict) -> None:
        order = state.get("order")
        order = np.arange(len(self._listed)) if order is None else np.asarray(order)
        if not is_permutation(order, len(self._listed)):
            raise self.error(
                f"the resume state orders {len(order)} lines; "
                f"{self.layer_param.image_data_param.source!r} now lists {len(self._listed)}: "
                "the list changed since the snapshot"
            )
        self._order = order
        self.lines = [self._listed[i] for i in order]
        self._pos = int(state["pos"])

    def _advance(self, lines: int) -> None:
        """Move ``lines`` on, wrapping to the start (reshuffled) at the end of the list."""
        self._pos += lines
        while self._pos >= len(self.lines):
            self._pos -= len(self.lines)
            if self.shuffle:
                self._shuffle_lines()

    def _read(self, index: int) -> np.ndarray:
        path = self.root_folder + self.lines[index][0]
        try:
            return read_image(path, self.new_height, self.new_width, self.is_color)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None

    def _infer_shape(self, shape) -> tuple[int, ...]:
        try:
            return self.transformer.infer_blob_shape(shape)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None

    def reshape(self, bottom, top):
        """Tops are sized by ``forward``, from the batch's first image."""

    def _transform(self, images, dtype) -> np.ndarray:
        """The batch through transform_param: in one go when the images share a shape,
        else one by one, each cropped from its own size (as Caffe transforms each image)."""
        if all(image.shape == images[0].shape for image in images):
            batch = np.stack(images)
            shape = self._infer_shape(batch.shape)
            return self.transformer.transform(batch, out=np.empty(shape, dtype=dtype))
        data = np.empty(self._infer_shape((len(images),) + images[0].shape), dtype=dtype)
        for k, image in enumerate(images):
            self._infer_shape((1,) + image.shape)  # the crop must fit this image
            self.transformer.transform(image[None], out=data[k : k + 1])
        return data

    def forward(self, bottom, top):
        images, labels = [], np.empty(self.batch_size, dtype=np.float32)
        for item in range(self.batch_size):
            image = self._read(self._pos)
            if images and image.shape != images[0].shape and not self.transformer.crop_size:
                raise self.error(
                    f"image {self.root_folder + self.lines[self._pos][0]!r} has shape "
                    f"{image.shape}, but the batch started with {images[0].shape}; set "
                    "new_height/new_width or crop_size, or use batch_size 1 for images of "
                    "mixed sizes"
                )
            images.append(image)
            labels[item] = self.lines[self._pos][1]
            self._advance(self._stride)
        data = self._transform(images, top[0].dtype)
        shape = data.shape
        xp = self.xp
        top[0].reshape(shape)
        top[0].data[...] = xp.asarray(data)
        top[1].reshape(self.batch_size)
        top[1].data[...] = xp.asarray(labels)
