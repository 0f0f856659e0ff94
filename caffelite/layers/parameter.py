"""Parameter: expose a learnable blob of ``parameter_param.shape`` as a top.

The top shares the blob's data and diff, so whatever the consumers write into the
top's diff is the parameter's gradient; forward and backward copy nothing. As in
Caffe the blob starts at zero (there is no filler); load or set its values.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


@register_layer("Parameter")
class ParameterLayer(Layer):
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        shape = tuple(self.layer_param.parameter_param.shape.dim)
        self.make_param_blobs([("parameter", shape, None)], " by parameter_param.shape")
        self._share(top)

    def _share(self, top) -> None:
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

    def reshape(self, bottom, top) -> None:
        """The shape is fixed by the parameter."""

    def forward(self, bottom, top) -> None:
        self._share(top)
