"""Detector: windowed detection with a TEST-phase Net (pycaffe's ``caffe.Detector``).

Each window (ymin, xmin, ymax, xmax) of an image is cropped, warped to the net's
input size by the Transformer's resize and classified, R-CNN style. With
``context_pad`` the window is first grown so that, once warped, a border of
``context_pad`` pixels of the input is surrounding context; where the grown box leaves
the image the border is filled with the mean (in unprocessed image space).
``detect_selective_search`` needs the external ``selective_search_ijcv_with_python``
module, as pycaffe's does.
"""

from __future__ import annotations

import os

import numpy as np

from caffelite import io
from caffelite.classifier import _first_input, deploy_transformer
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST
from caffelite.net import Net


class Detector(Net):
    """``Detector(model_file, pretrained_file, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None, context_pad=None)``; ``detect_windows(...)``."""

    def __init__(
        self,
        model_file,
        pretrained_file,
        mean=None,
        input_scale=None,
        raw_scale=None,
        channel_swap=None,
        context_pad=None,
    ):
        super().__init__(model_file, TEST, weights=pretrained_file)
        _first_input(self, "Detector")
        self.transformer = deploy_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows) -> list[dict]:
        """``[(image filename, [window, ...]), ...]`` -> one dict per window:
        ``{"filename", "window", "prediction"}``, in input order."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename).astype(np.float32)
            crops.extend(self.crop(image, window) for window in windows)
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        found = []
        for filename, windows in images_windows:
            for window in windows:
                found.append(
                    {"window": window, "prediction": predictions[len(found)], "filename": filename}
                )
        return found

    def detect_selective_search(self, image_fnames) -> list[dict]:
        """Detect over Selective Search proposals (needs selective_search_ijcv_with_python)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise CaffeliteError(
                "detect_selective_search needs the selective_search_ijcv_with_python module "
                "(https://github.com/sergeyk/selective_search_ijcv_with_python) on sys.path"
            ) from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows, strict=True))

    def crop(self, im: np.ndarray, window) -> np.ndarray:
        """The (H, W, K) crop of ``window`` (ymin, xmin, ymax, xmax), with context if set."""
        ymin, xmin, ymax, xmax = (int(v) for v in window)
        if not self.context_pad:
            return im[ymin:ymax, xmin:xmax]
        crop_size = self.blobs[self.inputs[0]].shape[3]  # assumes a square input
        scale = crop_size / (crop_size - 2.0 * self.context_pad)
        # Grow the box about its centre so the context lands in the padded border.
        half_h, half_w = (ymax - ymin + 1) / 2.0, (xmax - xmin + 1) / 2.0
        center = np.array([ymin + half_h, xmin + half_w] * 2)
        box = np.round(center + scale * np.array([-half_h, -half_w, half_h, half_w]))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = round(max(0.0, -box[0]) * scale_h)  # how far the box leaves the image
        pad_x = round(max(0.0, -box[1]) * scale_w)
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise CaffeliteError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
        crop_h = min(round(clip_h * scale_h), crop_size - pad_y)
        crop_w = min(round(clip_w * scale_w), crop_size - pad_x)
        top, left, bottom, right = (int(v) for v in box)
        context = io.resize_image(im[top:bottom, left:right], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y : pad_y + crop_h, pad_x : pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad) -> None:
        """Set the (H, W, K) crop size and, for context padding, the mean to pad with."""
        in_ = self.inputs[0]
        to_image = np.argsort(self.transformer.transpose[in_])  # the inverse transpose
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[to_image]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.copy().transpose(to_image)
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
