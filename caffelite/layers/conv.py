"""Convolution and Deconvolution: im2col over the whole batch, then one GEMM per call.

Caffe unfolds one image at a time and loops over the batch; here the whole batch (or
a few large chunks of it, see ``im2col.MAX_COL_ELEMENTS``) is unfolded at once and
multiplied with a single batched BLAS product over the groups, in whichever of the
two column layouts of :mod:`caffelite.im2col` is faster for the layer's shape.

Both layers are written in terms of a plain convolution from an "input side" ``a``
(``channels_in`` planes) to an "output side" ``b`` (``channels_out`` planes), with
weights ``(channels_out, channels_in / group, *kernel)`` over any number of spatial
axes (Caffe's ``num_spatial_axes``: all the axes after the channel axis):

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

from caffelite import im2col, kernels, winograd
from caffelite.im2col import BATCH_FIRST, Workspace
from caffelite.layer import Layer, register_layer
from caffelite.layers import conv_geometry
from caffelite.proto import caffe_pb2

#: Per-group weight elements from which the weight gradient accumulates in its GEMMs.
#: Below, one call per image and group costs more than the temporaries it saves: at
#: batch 8 on 2 threads, ResNet-50's 512x4608 weights took 16.7 ms instead of 35.6, its
#: 1024x256 ones 8.2 instead of 11.5, but LeNet's 20x25 at batch 64 1.9 instead of 1.3
#: and VGG-16's 64x576 331 instead of 291.
_ACCUMULATE_MIN = 1 << 16


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
        self.channel_axis, num_spatial = conv_geometry.spatial_axes(self, bottom[0], param)
        self.num_axes = bottom[0].num_axes
        where = conv_geometry.describe_bottom(self, bottom[0], self.channel_axis)
        self.geometry = conv_geometry.parse(self, param, num_spatial, where)
        self.force_nd = param.force_nd_im2col
        #: ``engine: CAFFE`` asks for Caffe's own algorithm (im2col and GEMM) everywhere.
        self.caffe_engine = param.engine == caffe_pb2.ConvolutionParameter.CAFFE
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
        kernel = self.geometry.kernel
        weight_shape = (self.channels_out, self.channels_in // self.group, *kernel)
        specs = [("weights", weight_shape, param.weight_filler)]
        if self.bias_term:
            specs.append(("bias", (self.num_output,), param.bias_filler))
        self.make_param_blobs(specs, f" (bias_term: {str(self.bias_term).lower()})")
        self.workspace = Workspace()
        self._reshaped_for = None  # the bottoms' shapes and dtype of the last reshape
        self._cols: dict[int, object] = {}

    # ---- reshape ---------------------------------------------------------------------
    def reshape(self, bottom, top):
        bottoms = (tuple(blob.shape for blob in bottom), bottom[0].dtype)
        if bottoms == self._reshaped_for:
            # The bottoms of the last forward (the reshape before every forward): the
            # geometry, layout and chunks stand; 57 convolutions rederiving them were
            # about 1 ms of GoogLeNet's 27-35 ms forward at batch 1.
            for top_blob in top:
                top_blob.reshape(self._top_shape)
            self._cols.clear()
            return
        self._reshaped_for = None  # until this reshape has passed its checks
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
        spatial = first.shape[axis + 1 :]
        out = self._output_shape(spatial, conv_geometry.describe_bottom(self, first, axis))
        self._top_shape = first.shape[:axis] + (self.num_output,) + out
        for top_blob in top:
            top_blob.reshape(self._top_shape)
        # "a" is the convolution's input side, "b" its output side.
        if self.reverse_dimensions:
            self.a_dims, self.b_dims = out, spatial
        else:
            self.a_dims, self.b_dims = spatial, out
        self.kernel_dim = self.channels_in // self.group * math.prod(self.geometry.kernel)
        self.b_spatial = math.prod(self.b_dims)
        self.layout = im2col.choose_layout(self.geometry, self.kernel_dim, self.b_spatial, self.num)
        per_image = self.kernel_dim * self.group * self.b_spatial
        #: Whether Winograd's F(4x4, 3x3) (caffelite.winograd) pays for this shape; the
        #: forward takes it where no backward follows (see ``forward``).
        group = self.group
        self.winograd = not (
            self.reverse_dimensions or self.force_nd or self.caffe_engine
        ) and winograd.applies(
            self.geometry,
            self.channels_in // group,
            self.channels_out // group,
            self.b_dims,
            self.num,
        )
        if self.winograd:
            winograd_size = winograd.per_image_elements(self.channels, self.num_output, out)
            per_image = max(per_image, winograd_size)
        self.chunks = im2col.batch_chunks(self.num, per_image)
        self.workspace.clear()  # new bottoms: buffers of other shapes
        self._cols.clear()
        self._reshaped_for = bottoms

    def _output_shape(self, spatial: tuple[int, ...], where: str) -> tuple[int, ...]:
        return conv_geometry.conv_output_shape(self, self.geometry, spatial, where)

    # ---- views -------------------------------------------------------------------------
    def _images(self, array, dims):
        """A blob array (any leading axes) as ``(num, C, *dims)``."""
        return array.reshape((self.num, array.shape[self.channel_axis]) + tuple(dims))

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
        shape = im2col.col_shape(layout, n, self.channels_in, self.b_dims, geometry)
        if slot is None:
            col = self.workspace.scratch(scratch, shape, dtype)
        else:
            col = self.workspace.array("col" + slot, shape, dtype)
        im2col.im2col(a, layout, geometry, col, self.force_nd)
        return self._col_operand(col, n)

    def _col_operand(self, col, n):
        if self.layout == BATCH_FIRST:
            return col.reshape(n, self.group, self.kernel_dim, self.b_spatial)
        return col.reshape(self.group, self.kernel_dim, self.b_spatial * n)

    def _output_operand(self, b):
        """The output-side chunk ``b`` ``(n, C_out, *out)`` as a GEMM operand.

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
        """b = W * cols (+ bias per output channel), written into ``b`` (n, C_out, *out)."""
        xp = self.xp
        n = b.shape[0]
        g, per_group = self.group, self.channels_out // self.group
        weights = self._weights()
        if self.layout == BATCH_FIRST:
            xp.matmul(weights, cols, out=b.reshape(n, g, per_group, self.b_spatial))
            if bias is not None:  # y * 1 + bias: one parallel pass
                ones = self.workspace.constant("ones", bias.shape, bias.dtype, 1.0)
                kernels.channel_affine(b, ones, bias, False, 0.0)
            return
        out = self.workspace.scratch("gemm_out", (g, per_group, self.b_spatial * n), b.dtype)
        xp.matmul(weights, cols, out=out)
        kernels.batch_last_to_first(
            out.reshape(self.channels_out, self.b_spatial, n),
            b.reshape(n, self.channels_out, self.b_spatial),
            bias,
        )

    def _conv_backward(self, b_operand, a):
        """a = col2im(W^T * b), written into the input-side chunk ``a`` (n, C_in, *in)."""
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
            "columns", im2col.col_shape(layout, n, self.channels_in, self.b_dims, geometry), a.dtype
        )
        xp.matmul(weights_t, b_operand, out=self._col_operand(dcol, n))
        im2col.col2im(dcol, layout, geometry, a, self.force_nd)

    def _weight_grad(self, cols, b_operand):
        """weights.diff += b * cols^T, summed over the chunk's images.

        Large per-group weights accumulate inside one GEMM per image and group
        (``beta = 1``); small ones take a batched product, a sum and an add, because
        a call costs more than the temporaries it saves (see ``_ACCUMULATE_MIN``).
        """
        xp = self.xp
        g, per_group = self.group, self.channels_out // self.group
        diff = self.blobs[0].diff.reshape(g, per_group, self.kernel_dim)
        swapped = cols.swapaxes(-1, -2)
        if diff[0].size >= _ACCUMULATE_MIN:
            if self.layout != BATCH_FIRST:  # one product per group holds the whole batch
                b_operand, swapped = b_operand[None], swapped[None]
            for image in range(b_operand.shape[0]):
                for group in range(g):
                    kernels.matmul_accumulate(
                        b_operand[image, group], swapped[image, group], diff[group]
                    )
            return
        dtype = diff.dtype
        total = self.workspace.scratch("wgrad", diff.shape, dtype)
        if self.layout == BATCH_FIRST:
            n = cols.shape[0]
            per_image = self.workspace.scratch("wgrad_n", (n, g, per_group, self.kernel_dim), dtype)
            xp.matmul(b_operand, swapped, out=per_image)
            xp.sum(per_image, axis=0, out=total)
        else:
            xp.matmul(b_operand, swapped, out=total)
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
    """Caffe's Convolution: ``top = W * bottom + b`` over N-d windows, with groups."""

    #: Set by the Net while it runs a TEST forward with the layers after this one
    #: folded in (see caffelite.fold): applied to each top after the GEMM.
    epilogue = None

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        # Winograd only where no backward follows: a backward needs the input unfolded
        # for the weight gradient anyway, and unfolding it there instead of in forward
        # cost more than Winograd saved (ResNet-50 forward + backward at batch 8,
        # 1,830 -> 1,990 ms; VGG-16 5,490 -> 5,620 ms). Its output transform applies the
        # bias and a folded epilogue itself, in the same pass.
        by_winograd = self.winograd and not self.backward_follows
        if by_winograd:
            epilogue = self.epilogue
            fused = (None, bias) if epilogue is None else epilogue.affine(top[0].data, bias)
            filters = winograd.transformed_filters(self.blobs[0].data, self.workspace)
        # Batch-first adds the bias in a pass of its own after the GEMM: a folded
        # epilogue's pass takes it instead (batch-last adds it in its transpose).
        to_epilogue = self.epilogue is not None and self.layout == BATCH_FIRST and not by_winograd
        gemm_bias, epilogue_bias = (None, bias) if to_epilogue else (bias, None)
        # Backward reuses the forward's columns when the batch was one chunk and a
        # backward follows (TRAIN, force_backward); otherwise they go to shared scratch.
        keep = len(self.chunks) == 1 and self.backward_follows
        for i, (bottom_blob, top_blob) in enumerate(zip(bottom, top, strict=True)):
            x = self._images(bottom_blob.data, self.a_dims)
            y = self._images(top_blob.data, self.b_dims)
            for start, stop in self.chunks:
                if by_winograd:
                    chunk = (x[start:stop], filters, y[start:stop], self.geometry.pad)
                    winograd.convolve(*chunk, self.group, self.workspace, fused)
                    continue
                cols = self._columns(x[start:stop], str(i) if keep else None)
                self._conv_forward(cols, y[start:stop], gemm_bias)
            if keep:
                self._cols[i] = cols
            if self.epilogue is not None and not by_winograd:
                self.epilogue.apply(top_blob.data, epilogue_bias)

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        want_bias = self.bias_term and self.param_propagate_down[1]
        for i, (top_blob, bottom_blob) in enumerate(zip(top, bottom, strict=True)):
            if not (want_weights or want_bias or propagate_down[i]):
                continue
            dy = self._images(top_blob.diff, self.b_dims)
            x = self._images(bottom_blob.data, self.a_dims)
            dx = self._images(bottom_blob.diff, self.a_dims) if propagate_down[i] else None
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
    ``(channels, num_output / group, *kernel)`` as in Caffe, so the bilinear
    filler gives FCN-style upsampling.
    """

    reverse_dimensions = True

    def _output_shape(self, spatial: tuple[int, ...], where: str) -> tuple[int, ...]:
        g = self.geometry
        out = tuple(
            im2col.deconv_output_size(*axis)
            for axis in zip(spatial, g.kernel, g.stride, g.pad, g.dilation, strict=True)
        )
        if any(size <= 0 for size in out):
            raise self.error(
                f"deconvolution output would be empty: input {spatial}, kernel {g.kernel}, "
                f"stride {g.stride}, pad {g.pad}, dilation {g.dilation} give {out} ({where})"
            )
        return out

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        for bottom_blob, top_blob in zip(bottom, top, strict=True):
            x = self._images(bottom_blob.data, self.b_dims)
            y = self._images(top_blob.data, self.a_dims)
            for start, stop in self.chunks:
                self._conv_backward(self._output_operand(x[start:stop]), y[start:stop])
            if bias is not None:
                y3 = y.reshape(self.num, self.num_output, math.prod(self.a_dims))
                y3 += bias[:, None]

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        want_bias = self.bias_term and self.param_propagate_down[1]
        for i, (top_blob, bottom_blob) in enumerate(zip(top, bottom, strict=True)):
            dy = self._images(top_blob.diff, self.a_dims)
            if want_bias:
                self.blobs[1].diff += dy.reshape(self.num, self.num_output, -1).sum(axis=(0, 2))
            if not (want_weights or propagate_down[i]):
                continue
            x = self._images(bottom_blob.data, self.b_dims)
            dx = self._images(bottom_blob.diff, self.b_dims) if propagate_down[i] else None
            for start, stop in self.chunks:
                cols = self._columns(dy[start:stop], None)
                if want_weights:
                    self._weight_grad(cols, self._output_operand(x[start:stop]))
                if dx is not None:
                    self._conv_forward(cols, dx[start:stop])
