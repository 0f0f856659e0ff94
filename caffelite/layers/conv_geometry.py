"""ConvolutionParameter's window: Caffe's rules for kernel, stride, pad and dilation.

Convolution, Deconvolution and Im2col read them alike (Caffe's BaseConvolutionLayer and
Im2colLayer): the spatial axes are all the axes after ``axis`` (the channel axis); each
repeated field is given once for all of them or once per axis (stride, pad and dilation
may be left out: 1, 0 and 1); the ``kernel_h``/``kernel_w`` forms (and ``stride_``,
``pad_``) exist for 2-D only.
"""

from __future__ import annotations

from caffelite.im2col import Geometry
from caffelite.shapes import canonical_axis


def spatial_axes(layer, bottom, param) -> tuple[int, int]:
    """(channel axis, number of spatial axes after it) of ``bottom``."""
    channel_axis = canonical_axis(layer, bottom, param.axis)
    return channel_axis, bottom.num_axes - channel_axis - 1


def describe_bottom(layer, bottom, channel_axis: int) -> str:
    """How errors name the bottom: its name (where the Net gave one), shape, channel axis."""
    names = layer.layer_param.bottom
    name = f" {names[0]!r}" if names else ""
    return f"bottom{name} of shape {bottom.shape} with channel axis {channel_axis}"


def parse(layer, param, num_spatial: int, where: str) -> Geometry:
    """The window of ``param`` over ``num_spatial`` axes; ``where`` names the bottom."""
    kernel = _per_axis(layer, param, "kernel_size", "kernel", None, num_spatial, where)
    if any(k <= 0 for k in kernel):
        raise layer.error(f"kernel dimensions must be positive, got {kernel}")
    stride = _per_axis(layer, param, "stride", "stride", 1, num_spatial, where)
    if any(s <= 0 for s in stride):
        raise layer.error(f"stride must be positive, got {stride}")
    pad = _per_axis(layer, param, "pad", "pad", 0, num_spatial, where)
    dilation = _per_axis(layer, param, "dilation", None, 1, num_spatial, where)
    if any(d <= 0 for d in dilation):
        raise layer.error(f"dilation must be positive, got {dilation}")
    return Geometry(kernel, stride, pad, dilation)


def _per_axis(layer, param, repeated, prefix, default, axes, where) -> tuple[int, ...]:
    values = list(getattr(param, repeated))
    if prefix is not None and (param.HasField(f"{prefix}_h") or param.HasField(f"{prefix}_w")):
        name_h, name_w = f"{prefix}_h", f"{prefix}_w"
        if axes != 2:
            raise layer.error(
                f"{name_h}/{name_w} can only be used for 2-D convolution, but the {where} "
                f"has {axes} spatial axes; give {repeated} instead"
            )
        if values:
            raise layer.error(
                f"either {repeated} or {name_h}/{name_w} should be specified; not both"
            )
        return (getattr(param, name_h), getattr(param, name_w))
    if not values and default is not None:
        return (default,) * axes
    if len(values) == 1:
        return (values[0],) * axes
    if len(values) != axes:
        raise layer.error(
            f"{repeated} must be specified once, or once per spatial dimension ({repeated} "
            f"specified {len(values)} times; {axes} spatial dims: {where})"
        )
    return tuple(values)


def axis_name(index: int, axes: int) -> str:
    """``h``/``w`` in 2-D (Caffe's words there), else the spatial axis' number."""
    return "hw"[index] if axes == 2 else f"spatial axis {index}"


def conv_output_shape(layer, geometry: Geometry, spatial: tuple[int, ...], where: str):
    """Caffe's convolution output shape, refusing a window larger than the padded input."""
    for i, (size, extent, pad) in enumerate(
        zip(spatial, geometry.extent, geometry.pad, strict=True)
    ):
        if size + 2 * pad < extent:
            raise layer.error(
                f"kernel extent {extent} along {axis_name(i, len(spatial))} is larger than "
                f"the padded input ({size} + 2*{pad}); bottom spatial shape is {spatial} "
                f"({where})"
            )
    return geometry.output_shape(*spatial)
