"""Accuracy: the fraction of positions whose label is among the top-k scores.

Caffe's tie rule: a position is correct when fewer than ``top_k`` *other* classes
score at least as high as the true class (``>=``), so ties count against the
prediction. An optional second top gives the accuracy per class. No gradient.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.layers.loss import int_labels
from caffelite.shapes import labelled_axis


def top_k_hits(xp, scores, labels, top_k: int):
    """Boolean (outer, inner): is ``labels`` within the top ``top_k`` of ``scores``
    (outer, C, inner)? Labels must be valid class indices."""
    true_score = xp.take_along_axis(scores, labels[:, None, :], axis=1)
    at_least_as_good = (scores >= true_score).sum(axis=1)  # includes the true class
    return at_least_as_good <= top_k


@register_layer("Accuracy")
class AccuracyLayer(Layer):
    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2
    #: Accuracy has no backward; force_backward must not ask it for gradients.
    allow_force_backward_bottoms = False

    def setup(self, bottom, top) -> None:
        param = self.layer_param.accuracy_param
        self.top_k = int(param.top_k)
        self.has_ignore_label = param.HasField("ignore_label")
        self.ignore_label = param.ignore_label

    def reshape(self, bottom, top) -> None:
        self.axis, self.dims = labelled_axis(
            self, bottom[0], bottom[1], self.layer_param.accuracy_param.axis, "class axis"
        )
        outer, channels, inner = self.dims
        if self.top_k > channels:
            raise self.error(
                f"top_k ({self.top_k}) must not exceed the number of classes ({channels}, "
                f"axis {self.axis} of the prediction of shape {bottom[0].shape})"
            )
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((channels,))

    def forward(self, bottom, top) -> None:
        xp = self.xp
        outer, channels, inner = self.dims
        labels, valid = int_labels(
            self,
            bottom[1].data.reshape(outer, inner),
            channels,
            self.ignore_label if self.has_ignore_label else None,
            f" (the classes of axis {self.axis} of the prediction of shape {bottom[0].shape})",
        )
        if valid is None:
            valid = xp.ones(labels.shape, dtype=bool)
        hits = top_k_hits(xp, bottom[0].data.reshape(self.dims), labels, self.top_k) & valid
        count = int(valid.sum())
        top[0].data[...] = hits.sum() / count if count else 0
        if len(top) > 1:
            per_class_total = xp.bincount(labels[valid], minlength=channels)
            per_class_hits = xp.bincount(labels[hits], minlength=channels)
            top[1].data[...] = xp.where(
                per_class_total > 0, per_class_hits / xp.maximum(per_class_total, 1), 0
            )
