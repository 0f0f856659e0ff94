"""Classifier: a TEST-phase Net that takes images and returns class probabilities
(pycaffe's ``caffe.Classifier``).

Images are (H, W, K) arrays as ``caffe.io.load_image`` gives them. Each is resized to
``image_dims`` (default: the net's input size), then either oversampled -- the four
corner crops and the centre crop of the net's input size, and their mirror images,
whose predictions are averaged, as Caffe's ImageNet reference models were evaluated --
or centre-cropped, then preprocessed by a ``caffe.io.Transformer`` (transpose to
K x H x W, channel swap, raw scale, mean, input scale) and run in batches.
"""

from __future__ import annotations

import numpy as np

from caffelite import io
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST
from caffelite.net import Net


def deploy_transformer(net: Net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer for ``net``'s first input: HWK images in, the net's KHW out."""
    in_ = net.inputs[0]
    transformer = io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


def _first_input(net: Net, what: str) -> str:
    if not net.inputs:
        raise CaffeliteError(
            f"{what} needs a deploy net with an Input layer; net {net.name!r} has no inputs"
        )
    return net.inputs[0]


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None)``; ``predict(images)``."""

    def __init__(
        self,
        model_file,
        pretrained_file,
        image_dims=None,
        mean=None,
        input_scale=None,
        raw_scale=None,
        channel_swap=None,
    ):
        super().__init__(model_file, TEST, weights=pretrained_file)
        in_ = _first_input(self, "Classifier")
        self.transformer = deploy_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or not len(image_dims):
            image_dims = self.crop_dims
        self.image_dims = np.array(image_dims)

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """Class probabilities (N, C) of N (H, W, K) images: averaged over the 10
        oversampled crops, or from the centre crop alone (``oversample=False``)."""
        if not len(inputs):
            raise CaffeliteError("Classifier.predict needs at least one image")
        height, width = (int(d) for d in self.image_dims)
        images = np.zeros((len(inputs), height, width, inputs[0].shape[2]), dtype=np.float32)
        for ix, image in enumerate(inputs):
            images[ix] = io.resize_image(image, (height, width))
        if oversample:
            crops = io.oversample(images, self.crop_dims)
        else:
            crops = self._center_crop(images)
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(inputs), 10, -1).mean(axis=1)
        return predictions

    def _center_crop(self, images: np.ndarray) -> np.ndarray:
        """The crop_dims window centred in image_dims (corners rounded down, as pycaffe)."""
        center = self.image_dims / 2.0
        top, left = (center - self.crop_dims / 2.0).astype(int)
        crop_h, crop_w = (int(d) for d in self.crop_dims)
        return images[:, top : top + crop_h, left : left + crop_w, :]
