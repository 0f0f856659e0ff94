"""Scale and Bias: multiply / add an operand broadcast along some axes of bottom[0].

The operand is a learned blob, or bottom[1] when given. Its shape must equal
``bottom[0].shape[axis : axis + operand.ndim]``; it then repeats over the axes
before (``outer``) and after (``inner``), so bottom[0] is viewed as
``(outer, dim, inner)``. The learned blob's shape is ``bottom[0].shape[axis : axis +
num_axes]`` (``num_axes: -1`` runs to the end, ``0`` makes it a scalar). A scalar
operand ignores ``axis``, as in Caffe.

Scale's defaults: ``axis 1, num_axes 1``, filler constant 1 (identity), and with
``bias_term`` a bias blob (filler ``bias_filler``, default constant 0) shaped as
Caffe's internal Bias layer makes it (``num_axes`` = bottom[1]'s axes when the scale
is a bottom). Both layers may run in place; Scale then keeps a copy of ``x`` for the
scale gradient.
"""

from __future__ import annotations

from caffelite import kernels
from caffelite.fillers import fill
from caffelite.layer import Layer, register_layer
from caffelite.proto import caffe_pb2


def operand_geometry(layer, bottom_shape, axis: int, operand_shape, what: str):
    """``(outer, dim, inner)`` for an operand applied at ``axis``; an error if it does not fit."""
    operand_shape = tuple(operand_shape)
    if not operand_shape:
        axis = 0
    else:
        axis = _canonical_axis(layer, axis, bottom_shape)
    end = axis + len(operand_shape)
    if end > len(bottom_shape) or tuple(bottom_shape[axis:end]) != operand_shape:
        raise layer.error(
            f"{what} shape {operand_shape} does not match bottom[0] shape "
            f"{tuple(bottom_shape)} at axes {axis}..{end - 1} (axis {axis})"
        )
    outer = _prod(bottom_shape[:axis])
    dim = _prod(operand_shape)
    inner = _prod(bottom_shape[end:])
    return outer, dim, inner


def learned_operand_shape(layer, bottom_shape, axis: int, num_axes: int, what: str):
    """Shape of a learned operand: ``bottom_shape[axis : axis + num_axes]`` (Caffe's rule)."""
    axis = _canonical_axis(layer, axis, bottom_shape)
    if num_axes < -1:
        raise layer.error(
            "num_axes must be non-negative, or -1 to extend to the end of bottom[0]; "
            f"got {num_axes}"
        )
    if num_axes == -1:
        return tuple(bottom_shape[axis:])
    if axis + num_axes > len(bottom_shape):
        raise layer.error(
            f"{what} blob with num_axes {num_axes} starting at axis {axis} extends past "
            f"bottom[0] shape {tuple(bottom_shape)}"
        )
    return tuple(bottom_shape[axis : axis + num_axes])


def _canonical_axis(layer, axis: int, shape) -> int:
    n = len(shape)
    if not -n <= axis < n:
        raise layer.error(f"axis {axis} is out of range for bottom[0] of shape {tuple(shape)}")
    return axis + n if axis < 0 else axis


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


def sum_to_operand(xp, a3):
    """Reduce an (outer, dim, inner) array to the operand's ``dim`` values."""
    return a3.sum(axis=(0, 2))


# ---- Bias -------------------------------------------------------------------------
@register_layer("Bias")
class BiasLayer(Layer):
    """``y = x + b``, ``b`` broadcast (bias_param: axis 1, num_axes 1, filler constant 0)."""

    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_param
        self.axis = int(param.axis)
        if len(bottom) == 1 and self.blobs_need_setup():
            shape = learned_operand_shape(self, bottom[0].shape, self.axis, param.num_axes, "bias")
            fill(self.blobs.add_blob(*shape), param.filler)
        want = 1 if len(bottom) == 1 else 0
        if len(self.blobs) != want:
            raise self.error(
                f"expects {want} parameter blob(s) with {len(bottom)} bottom(s), "
                f"found {len(self.blobs)}"
            )

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        operand = self._operand(bottom)
        self.geometry = operand_geometry(self, bottom[0].shape, self.axis, operand.shape, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        outer, dim, inner = self.geometry
        b = self._operand(bottom).data.reshape(1, dim, 1)
        y = top[0].data.reshape(outer, dim, inner)
        self.xp.add(bottom[0].data.reshape(outer, dim, inner), b, out=y)

    def backward(self, top, propagate_down, bottom):
        outer, dim, inner = self.geometry
        dy = top[0].diff.reshape(outer, dim, inner)
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            grad = sum_to_operand(self.xp, dy).reshape(self._operand(bottom).shape)
            if learned:
                self.blobs[0].diff[...] += grad
            else:
                bottom[1].diff[...] = grad
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff


# ---- Scale ------------------------------------------------------------------------
@register_layer("Scale")
class ScaleLayer(Layer):
    """``y = x * s (+ b)``, ``s`` broadcast (scale_param: axis 1, num_axes 1, filler 1)."""

    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        param = self.layer_param.scale_param
        self.axis = int(param.axis)
        self.bias_term = bool(param.bias_term)
        learned = len(bottom) == 1
        want = int(learned) + int(self.bias_term)
        if self.blobs_need_setup():
            if learned:
                shape = learned_operand_shape(
                    self, bottom[0].shape, self.axis, param.num_axes, "scale"
                )
                filler = param.filler
                if not param.HasField("filler"):
                    filler = caffe_pb2.FillerParameter(type="constant", value=1.0)
                fill(self.blobs.add_blob(*shape), filler)
            if self.bias_term:
                bias_axes = bottom[1].num_axes if not learned else param.num_axes
                shape = learned_operand_shape(self, bottom[0].shape, self.axis, bias_axes, "bias")
                fill(self.blobs.add_blob(*shape), param.bias_filler)
        if len(self.blobs) != want:
            raise self.error(
                f"expects {want} parameter blob(s) ({'scale' if learned else 'no scale'}"
                f"{', bias' if self.bias_term else ''}) with {len(bottom)} bottom(s), "
                f"found {len(self.blobs)}"
            )
        self.bias_index = want - 1 if self.bias_term else None

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.geometry = operand_geometry(self, shape, self.axis, self._scale(bottom).shape, "scale")
        if self.bias_term:
            bias = self.blobs[self.bias_index]
            self.bias_geometry = operand_geometry(self, shape, self.axis, bias.shape, "bias")
        if top[0] is bottom[0]:
            saved = getattr(self, "_saved_input", None)
            if saved is None or saved.shape != shape or saved.dtype != bottom[0].dtype:
                self._saved_input = self.xp.empty(shape, dtype=bottom[0].dtype)
        else:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        xp = self.xp
        if top[0] is bottom[0]:
            self._saved_input[...] = bottom[0].data  # the scale gradient needs x
        outer, dim, inner = self.geometry
        scale = self._scale(bottom).data
        y = top[0].data.reshape(outer, dim, inner)
        if self.bias_term and self.bias_geometry == self.geometry:
            # x * s + b in one pass over y (the same two roundings as multiply, then add)
            if top[0] is not bottom[0]:
                xp.copyto(y, bottom[0].data.reshape(outer, dim, inner))
            bias = self.blobs[self.bias_index].data
            kernels.channel_affine(y, scale.reshape(dim), bias.reshape(dim), False, 0.0)
            return
        xp.multiply(bottom[0].data.reshape(outer, dim, inner), scale.reshape(1, dim, 1), out=y)
        if self.bias_term:
            outer, dim, inner = self.bias_geometry
            y = top[0].data.reshape(outer, dim, inner)
            y += self.blobs[self.bias_index].data.reshape(1, dim, 1)

    def backward(self, top, propagate_down, bottom):
        learned = len(bottom) == 1
        scale = self._scale(bottom)
        want_scale = (learned and self.param_propagate_down[0]) or (
            not learned and propagate_down[1]
        )
        want_bias = self.bias_term and self.param_propagate_down[self.bias_index]
        bias_in_pass = want_bias and self.bias_geometry == self.geometry
        if want_bias and not bias_in_pass:
            # a bias over other axes than the scale's: its own sum, taken before an
            # in-place pass overwrites dy
            outer, dim, inner = self.bias_geometry
            bias = self.blobs[self.bias_index]
            grad = sum_to_operand(self.xp, top[0].diff.reshape(outer, dim, inner))
            bias.diff[...] += grad.reshape(bias.shape)
        if not (want_scale or bias_in_pass or propagate_down[0]):
            return
        outer, dim, inner = self.geometry
        x = self._saved_input if top[0] is bottom[0] else bottom[0].data
        sums = self.xp.empty((2, dim), dtype=self.xp.float64)  # sum(dy * x), sum(dy)
        kernels.channel_affine_backward(
            x.reshape(outer, dim, inner),
            top[0].diff.reshape(outer, dim, inner),
            bottom[0].diff.reshape(outer, dim, inner) if propagate_down[0] else None,
            scale.data.reshape(dim),
            sums[0],
            sums[1],
        )
        dtype = top[0].diff.dtype
        if want_scale:
            grad = sums[0].astype(dtype).reshape(scale.shape)
            if learned:
                scale.diff[...] += grad
            else:
                scale.diff[...] = grad
        if bias_in_pass:
            bias = self.blobs[self.bias_index]
            bias.diff[...] += sums[1].astype(dtype).reshape(bias.shape)
