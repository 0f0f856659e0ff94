"""Axis arithmetic shared by layers, with errors that name the layer."""

from __future__ import annotations

import math


def split_axis(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(outer, channels, inner): the sizes before, at and after ``axis``."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def canonical_axis(layer, blob, axis: int, what: str = "axis") -> int:
    """``blob.canonical_axis_index(axis)`` with an error that names the layer."""
    if not -blob.num_axes <= axis < blob.num_axes:
        raise layer.error(f"{what} {axis} is out of range for a bottom of shape {blob.shape}")
    return axis + blob.num_axes if axis < 0 else axis


def labelled_axis(layer, prediction, labels, axis: int, what: str = "axis"):
    """(axis, (outer, channels, inner)) of ``prediction``, checking one label per position.

    Losses and Accuracy take one label for every position outside the class axis.
    """
    axis = canonical_axis(layer, prediction, axis, what)
    outer, channels, inner = split_axis(prediction.shape, axis)
    if outer * inner != labels.count:
        raise layer.error(
            f"the number of labels must match the number of predictions: predictions "
            f"of shape {prediction.shape} with {what} {axis} need {outer * inner} labels "
            f"(outer {outer} x inner {inner}), but the label bottom has shape "
            f"{labels.shape} ({labels.count} labels)"
        )
    return axis, (outer, channels, inner)
