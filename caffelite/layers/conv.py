"""Convolution and Deconvolution: im2col over the whole batch, then one GEMM per call.

Caffe unfolds one image at a time and loops over the batch; here the whole batch (or
a few large chunks of it, see ``im2col.MAX_COL_ELEMENTS``) is unfolded at once and
multiplied with a single batched BLAS product over the groups, in whichever of the
two column layouts of :mod:`caffelite.im2col` is faster for the layer's shape.

Both layers are written in terms of a plain convolution from an "input side" ``a``
(``channels_in`` planes) to an "output side" ``b`` (``channels_out`` planes), with
weights ``(channels_out, channels_in / group, kh, kw)``:

* ``_conv_forward``:   b  = W * im2col(a)
* ``_conv_backward``:  a  = col2im(W^T * b)
* ``_weight_grad``:   dW += b * im2col(a)^T

Convolution maps bottom -> top with the first; Deconvolution (the transposed
convolution) maps bottom -> top with the second, exactly as Caffe's
``reverse_dimensions``.

Columns computed in forward are kept for backward when the batch fits in one chunk
(it always does for LeNet/CIFAR-size nets): backward then uses the bottom values of
the last forward, which is what a Net guarantees.
"""

from __future__ import annotations

import math

from caffelite import im2col
from caffelite.im2col import BATCH_FIRST, Geometry, Workspace
from caffelite.layer import TRAIN, Layer, register_layer
from caffelite.shapes import canonical_axis


class _ConvolutionBase(Layer):
    """Parameter parsing, parameter blobs and the three GEMM primitives."""

    min_bottom_blobs = 1
    min_top_blobs = 1
    equal_num_bottom_top_blobs = True

    #: Deconvolution swaps the roles of bottom and top in the weight shape.
    reverse_dimensions = False

    # ---- setup -----------------------------------------------------------------------
    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.channel_axis = canonical_axis(self, bottom[0], param.axis)
        self.num_axes = bottom[0].num_axes
        num_spatial = self.num_axes - self.channel_axis - 1
        if num_spatial != 2:
            raise self.error(
                f"only 2-D convolution is supported: bottom shape {bottom[0].shape} with "
                f"channel axis {self.channel_axis} has {num_spatial} spatial axes, expected 2"
            )
        self.geometry = self._parse_geometry(param)
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = param.num_output
        self.group = param.group
        if self.num_output <= 0:
            raise self.error(f"num_output must be positive, got {self.num_output}")
        if self.group <= 0:
            raise self.error(f"group must be positive, got {self.group}")
        if self.channels % self.group:
            raise self.error(
                f"the number of input channels ({self.channels}) must be divisible by "
                f"group ({self.group})"
            )
        if self.num_output % self.group:
            raise self.error(
                f"num_output ({self.num_output}) must be divisible by group ({self.group})"
            )
        if self.reverse_dimensions:
            self.channels_out, self.channels_in = self.channels, self.num_output
        else:
            self.channels_out, self.channels_in = self.num_output, self.channels
        self.bias_term = param.bias_term
        kh, kw = self.geometry.kernel
        weight_shape = (self.channels_out, self.channels_in // self.group, kh, kw)
        specs = [("weights", weight_shape, param.weight_filler)]
        if self.bias_term:
            specs.append(("bias", (self.num_output,), param.bias_filler))
        self.make_param_blobs(specs, f" (bias_term: {str(self.bias_term).lower()})")
        self.workspace = Workspace()
        self._input_key = None
        self._cols: dict[int, object] = {}

    def _parse_geometry(self, param) -> Geometry:
        """Caffe's rules: repeated fields given once or once per axis, or the _h/_w forms."""
        kernel = self._pair(param, "kernel_size", "kernel_h", "kernel_w", None)
        if any(k <= 0 for k in kernel):
            raise self.error(f"kernel dimensions must be positive, got {kernel}")
        stride = self._pair(param, "stride", "stride_h", "stride_w", 1)
        if any(s <= 0 for s in stride):
            raise self.error(f"stride must be positive, got {stride}")
        pad = self._pair(param, "pad", "pad_h", "pad_w", 0)
        dilation = self._pair(param, "dilation", None, None, 1)
        if any(d <= 0 for d in dilation):
            raise self.error(f"dilation must be positive, got {dilation}")
        return Geometry(kernel, stride, pad, dilation)

    def _pair(self, param, repeated, name_h, name_w, default) -> tuple[int, int]:
        values = list(getattr(param, repeated))
        if name_h is not None and (param.HasField(name_h) or param.HasField(name_w)):
            if values:
                raise self.error(
                    f"either {repeated} or {name_h}/{name_w} should be specified; not both"
                )
            return (getattr(param, name_h), getattr(param, name_w))
        if len(values) == 0 and default is not None:
            return (default, default)
        if len(values) not in (1, 2):
            raise self.error(
                f"{repeated} must be specified once, or once per spatial dimension "
                f"({repeated} specified {len(values)} times; 2 spatial dims)"
            )
        return (values[0], values[-1])

    # ---- reshape ---------------------------------------------------------------------
    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.num_axes:
            raise self.error(f"bottom must keep {self.num_axes} axes, got shape {first.shape}")
        if first.shape[self.channel_axis] != self.channels:
            raise self.error(
                f"bottom has {first.shape[self.channel_axis]} channels (shape {first.shape}), "
                f"but the layer was set up for {self.channels}"
            )
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != first.shape:
                raise self.error(
                    f"all bottoms must have the same shape: bottom[0] is {first.shape}, "
                    f"bottom[{i}] is {blob.shape}"
                )
        axis = self.channel_axis
        self.num = math.prod(first.shape[:axis])
        height, width = first.shape[axis + 1 :]
        out_hw = self._output_hw(height, width)
        for top_blob in top:
            top_blob.reshape(first.shape[:axis] + (self.num_output,) + out_hw)
        # "a" is the convolution's input side, "b" its output side.
        if self.reverse_dimensions:
            self.a_hw, self.b_hw = out_hw, (height, width)
        else:
            self.a_hw, self.b_hw = (height, width), out_hw
        self.kernel_dim = self.channels_in // self.group * math.prod(self.geometry.kernel)
        self.b_spatial = math.prod(self.b_hw)
        self.layout = im2col.choose_layout(self.geometry, self.kernel_dim, self.b_spatial)
        per_image = self.kernel_dim * self.group * self.b_spatial
        self.chunks = im2col.batch_chunks(self.num, per_image)
        key = (first.shape, first.dtype)
        if key != self._input_key:
            self.workspace.clear()
            self._input_key = key
        self._cols.clear()

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        geometry = self.geometry
        extent = geometry.extent
        for size, ext, pad, axis in zip((height, width), extent, geometry.pad, "hw", strict=True):
            if size + 2 * pad < ext:
                raise self.error(
                    f"kernel extent {ext} along {axis} is larger than the padded input "
                    f"({size} + 2*{pad}); bottom spatial shape is ({height}, {width})"
                )
        return geometry.output_shape(height, width)

    # ---- views -------------------------------------------------------------------------
    def _images(self, array, hw):
        """A blob array (any leading axes) as ``(num, C, H, W)``."""
        return array.reshape((self.num, array.shape[self.channel_axis]) + tuple(hw))

    # ---- the three GEMM primitives ------------------------------------------------------
    def _columns(self, a, slot: str | None, scratch: str = "columns"):
        """im2col of the input-side chunk ``a``, as the GEMM operand of the layout.

        Batch-first: ``(n, G, kernel_dim, P)``; batch-last: ``(G, kernel_dim, P * n)``.
        ``slot`` names the layer's own buffer for columns that backward reuses; None
        puts them in the shared scratch buffer ``scratch``, valid only until the next
        layer runs. Forward columns and backward's column gradients are never live
        at once, so both use "columns": a test net's and a train net's largest
        buffers are one. Columns recomputed inside backward need their own buffer.
        """
        n = a.shape[0]
        g, geometry, layout = self.group, self.geometry, self.layout
        if layout == BATCH_FIRST and geometry.is_pointwise:
            return a.reshape(n, g, self.kernel_dim, self.b_spatial)
        dtype = a.dtype
        shape = im2col.col_shape(layout, n, self.channels_in, self.b_hw, geometry)
        if slot is None:
            col = self.workspace.scratch(scratch, shape, dtype)
        else:
            col = self.workspace.array("col" + slot, shape, dtype)
        im2col.im2col(a, layout, geometry, col)
        return self._col_operand(col, n)

    def _col_operand(self, col, n):
        if self.layout == BATCH_FIRST:
            return col.reshape(n, self.group, self.kernel_dim, self.b_spatial)
        return col.reshape(self.group, self.kernel_dim, self.b_spatial * n)

    def _output_operand(self, b):
        """The output-side chunk ``b`` ``(n, C_out, oh, ow)`` as a GEMM operand.

        Batch-first: a view ``(n, G, C_out/G, P)``; batch-last: a transposed copy
        ``(G, C_out/G, P * n)`` in the workspace.
        """
        n = b.shape[0]
        g, per_group = self.group, self.channels_out // self.group
        if self.layout == BATCH_FIRST:
            return b.reshape(n, g, per_group, self.b_spatial)
        xp = self.xp
        out = self.workspace.scratch("b_t", (self.channels_out, self.b_spatial, n), b.dtype)
        xp.copyto(out, b.reshape(n, self.channels_out, self.b_spatial).transpose(1, 2, 0))
        return out.reshape(g, per_group, self.b_spatial * n)

    def _weights(self):
        g = self.group
        return self.blobs[0].data.reshape(g, self.channels_out // g, self.kernel_dim)

    def _conv_forward(self, cols, b, bias=None):
        """b = W * cols (+ bias per output channel), written into ``b`` (n, C_out, oh, ow)."""
        xp = self.xp
        n = b.shape[0]
        g, per_group = self.group, self.channels_out // self.group
        weights = self._weights()
        if self.layout == BATCH_FIRST:
            xp.matmul(weights, cols, out=b.reshape(n, g, per_group, self.b_spatial))
            if bias is not None:
                b3 = b.reshape(n, self.channels_out, self.b_spatial)
                b3 += bias[:, None]
            return
        out = self.workspace.scratch("gemm_out", (g, per_group, self.b_spatial * n), b.dtype)
        xp.matmul(weights, cols, out=out)
        out_t = out.reshape(self.channels_out, self.b_spatial, n).transpose(2, 0, 1)
        b3 = b.reshape(n, self.channels_out, self.b_spatial)
        if bias is None:
            xp.copyto(b3, out_t)
        else:
            xp.add(out_t, bias[:, None], out=b3)

    def _conv_backward(self, b_operand, a):
        """a = col2im(W^T * b), written into the input-side chunk ``a`` (n, C_in, H, W)."""
        xp = self.xp
        n = a.shape[0]
        geometry, layout = self.geometry, self.layout
        weights_t = self._weights().transpose(0, 2, 1)
        if layout == BATCH_FIRST and geometry.is_pointwise:
            xp.matmul(
                weights_t, b_operand, out=a.reshape(n, self.group, self.kernel_dim, self.b_spatial)
            )
            return
        dcol = self.workspace.scratch(
            "columns", im2col.col_shape(layout, n, self.channels_in, self.b_hw, geometry), a.dtype
        )
        xp.matmul(weights_t, b_operand, out=self._col_operand(dcol, n))
        im2col.col2im(dcol, layout, geometry, a)

    def _weight_grad(self, cols, b_operand):
        """weights.diff += b * cols^T, summed over the chunk's images."""
        xp = self.xp
        g, per_group = self.group, self.channels_out // self.group
        diff = self.blobs[0].diff.reshape(g, per_group, self.kernel_dim)
        dtype = diff.dtype
        if self.layout == BATCH_FIRST:
            n = cols.shape[0]
            per_image = self.workspace.scratch("wgrad_n", (n, g, per_group, self.kernel_dim), dtype)
            xp.matmul(b_operand, cols.swapaxes(-1, -2), out=per_image)
            total = self.workspace.scratch("wgrad", diff.shape, dtype)
            xp.sum(per_image, axis=0, out=total)
        else:
            total = self.workspace.scratch("wgrad", diff.shape, dtype)
            xp.matmul(b_operand, cols.swapaxes(-1, -2), out=total)
        diff += total

    def _bias_grad(self, b_operand, n):
        """bias.diff += the output-side gradient summed over images and pixels."""
        diff = self.blobs[1].diff
        if self.layout == BATCH_FIRST:
            diff += b_operand.reshape(n, self.num_output, self.b_spatial).sum(axis=(0, 2))
        else:
            diff += b_operand.reshape(self.num_output, -1).sum(axis=1)


@register_layer("Convolution")
class ConvolutionLayer(_ConvolutionBase):
    """Caffe's Convolution: ``top = W * bottom + b`` over 2-D windows, with groups."""

    #: Set by the Net while it runs a TEST forward with the layers after this one
    #: folded in (see caffelite.fold): applied to each top after the GEMM.
    epilogue = None

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        # Backward reuses the forward's columns when the batch was one chunk and a
        # backward is expected (TRAIN); otherwise they go to shared scratch.
        keep = len(self.chunks) == 1 and self.phase == TRAIN
        for i, (bottom_blob, top_blob) in enumerate(zip(bottom, top, strict=True)):
            x = self._images(bottom_blob.data, self.a_hw)
            y = self._images(top_blob.data, self.b_hw)
            for start, stop in self.chunks:
                cols = self._columns(x[start:stop], str(i) if keep else None)
                self._conv_forward(cols, y[start:stop], bias)
            if keep:
                self._cols[i] = cols
            if self.epilogue is not None:
                self.epilogue.apply(top_blob.data)

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        want_bias = self.bias_term and self.param_propagate_down[1]
        for i, (top_blob, bottom_blob) in enumerate(zip(top, bottom, strict=True)):
            if not (want_weights or want_bias or propagate_down[i]):
                continue
            dy = self._images(top_blob.diff, self.b_hw)
            x = self._images(bottom_blob.data, self.a_hw)
            dx = self._images(bottom_blob.diff, self.a_hw) if propagate_down[i] else None
            for start, stop in self.chunks:
                b_operand = self._output_operand(dy[start:stop])
                if want_bias:
                    self._bias_grad(b_operand, stop - start)
                if want_weights:
                    cols = self._cols.get(i)
                    if cols is None:
                        cols = self._columns(x[start:stop], None, "columns_backward")
                    self._weight_grad(cols, b_operand)
                if dx is not None:
                    self._conv_backward(b_operand, dx[start:stop])


@register_layer("Deconvolution")
class DeconvolutionLayer(_ConvolutionBase):
    """Caffe's Deconvolution: the transposed convolution (Convolution's backward pass).

    Output size ``stride * (in - 1) + extent - 2 * pad``; weights are stored
    ``(channels, num_output / group, kh, kw)`` as in Caffe, so the bilinear
    filler gives FCN-style upsampling.
    """

    reverse_dimensions = True

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        geometry = self.geometry
        out = tuple(
            im2col.deconv_output_size(size, k, s, p, d)
            for size, k, s, p, d in zip(
                (height, width),
                geometry.kernel,
                geometry.stride,
                geometry.pad,
                geometry.dilation,
                strict=True,
            )
        )
        if min(out) <= 0:
            raise self.error(
                f"deconvolution output would be empty: input ({height}, {width}), kernel "
                f"{geometry.kernel}, stride {geometry.stride}, pad {geometry.pad} give {out}"
            )
        return out

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        for bottom_blob, top_blob in zip(bottom, top, strict=True):
            x = self._images(bottom_blob.data, self.b_hw)
            y = self._images(top_blob.data, self.a_hw)
            for start, stop in self.chunks:
                self._conv_backward(self._output_operand(x[start:stop]), y[start:stop])
            if bias is not None:
                y3 = y.reshape(self.num, self.num_output, -1)
                y3 += bias[:, None]

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        want_bias = self.bias_term and self.param_propagate_down[1]
        for i, (top_blob, bottom_blob) in enumerate(zip(top, bottom, strict=True)):
            dy = self._images(top_blob.diff, self.a_hw)
            if want_bias:
                self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
            if not (want_weights or propagate_down[i]):
                continue
            x = self._images(bottom_blob.data, self.b_hw)
            dx = self._images(bottom_blob.diff, self.b_hw) if propagate_down[i] else None
            for start, stop in self.chunks:
                cols = self._columns(dy[start:stop], None)
                if want_weights:
                    self._weight_grad(cols, self._output_operand(x[start:stop]))
                if dx is not None:
                    self._conv_forward(cols, dx[start:stop])
