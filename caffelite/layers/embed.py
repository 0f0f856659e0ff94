"""Embed: look up rows of a learned table by integer index (Caffe's EmbedLayer).

The weight is ``(input_dim, num_output)`` (InnerProduct's transposed, so a lookup
reads one contiguous row); the top is the bottom's shape plus ``num_output``.
It equals an InnerProduct on one-hot inputs, but stores only the indices.
The weight gradient scatter-adds each top row into the row it was read from
(repeated indices accumulate). The indices themselves have no gradient.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


def checked_indices(layer: Layer, values, size: int, what: str):
    """``values`` as integer indices; an error names the first non-integer or out-of-range one."""
    xp = layer.xp
    bad = ~((values >= 0) & (values < size) & (xp.floor(values) == values))  # NaN is bad too
    if bool(bad.any()):
        first = float(values[bad][0])
        raise layer.error(f"{what} {first:g} is not an integer in [0, {size})")
    return values.astype(xp.int64)


@register_layer("Embed")
class EmbedLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allow_force_backward_bottoms = False

    def setup(self, bottom, top) -> None:
        param = self.layer_param.embed_param
        self.num_output = param.num_output
        self.input_dim = param.input_dim
        if self.num_output <= 0:
            raise self.error("embed_param.num_output must be positive")
        if self.input_dim <= 0:
            raise self.error("embed_param.input_dim must be positive")
        self.bias_term = param.bias_term
        specs = [("weights", (self.input_dim, self.num_output), param.weight_filler)]
        if self.bias_term:
            specs.append(("bias", (self.num_output,), param.bias_filler))
        self.make_param_blobs(specs)

    def reshape(self, bottom, top) -> None:
        self.rows = bottom[0].count
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def forward(self, bottom, top) -> None:
        xp = self.xp
        self._indices = checked_indices(
            self, bottom[0].data.reshape(-1), self.input_dim, "embed index"
        )
        out = top[0].data.reshape(self.rows, self.num_output)
        xp.take(self.blobs[0].data, self._indices, axis=0, out=out)
        if self.bias_term:
            out += self.blobs[1].data

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            raise self.error("cannot backpropagate to its input (the indices)")
        dtop = top[0].diff.reshape(self.rows, self.num_output)
        if self.param_propagate_down[0]:
            self.xp.add.at(self.blobs[0].diff, self._indices, dtop)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dtop.sum(axis=0)
