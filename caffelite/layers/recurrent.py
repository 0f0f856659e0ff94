"""Recurrent layers as Caffe builds them: an unrolled internal Net over T timesteps.

Bottoms: ``x`` (T x N x ...), ``cont`` (T x N; 0 where a sequence starts, 1 where it
continues), an optional static input ``x_static`` (N x ...) and, with
``expose_hidden``, the initial recurrent state (``h_0``, and ``c_0`` for LSTM, each
1 x N x num_output). Tops: the per-timestep output, then with ``expose_hidden`` the
final state. Without ``expose_hidden`` the final state of one batch is the initial
state of the next (``cont`` decides whether it is used), as in Caffe.

A subclass describes one architecture as layers of a NetParameter
(:meth:`RecurrentLayer.fill_unrolled_net`); this class wraps it in a :class:`Net`
with Caffe's names (``<layer>_<inner layer>``), its parameter sharing by
``param { name }`` and its order, so ``self.blobs`` are the unrolled net's own
parameters in Caffe's order and a Caffe-trained model's weights load unchanged.

Like Caffe, gradients stop at the batch boundary: none flow into the exposed
initial state or out of the exposed final state (truncated backpropagation).
"""

from __future__ import annotations

from caffelite.layer import Layer
from caffelite.proto import caffe_pb2


def add_layer(net_param, type_name: str, name: str, bottoms=(), tops=(), params=()):
    """Append a layer to ``net_param``; ``params`` are ParamSpec names (shared weights)."""
    layer = net_param.layer.add(type=type_name, name=name)
    layer.bottom.extend(bottoms)
    layer.top.extend(tops)
    for param_name in params:
        layer.param.add(name=param_name)
    return layer


def inner_product(net_param, name, bottom, top, params, num_output, param, axis=2, bias=False):
    """An InnerProduct of the unrolled net, with the recurrent layer's fillers."""
    layer = add_layer(net_param, "InnerProduct", name, [bottom], [top], params)
    ip = layer.inner_product_param
    ip.num_output = num_output
    ip.bias_term = bias
    ip.axis = axis
    ip.weight_filler.CopyFrom(param.weight_filler)
    if bias:
        ip.bias_filler.CopyFrom(param.bias_filler)
    return layer


def add_shared_front(layer, net_param, states, weight: str, bias: str, width: int):
    """The layers RNN and LSTM begin with, in Caffe's order and names.

    The initial-state Input (``states``, each 1 x N x num_output); ``cont_slice``;
    ``x_transform`` (``W_x* x + b``, for all timesteps at once); with a static input
    its own transform, reshaped to one timestep; and the slice of the transformed x
    into timesteps. ``weight`` is ``W_xc`` (LSTM) or ``W_xh`` (RNN). Returns the two
    Slice layers, whose per-timestep tops the caller adds.
    """
    param = layer.layer_param.recurrent_param
    state_input = add_layer(net_param, "Input", "state_input", tops=states)
    for _ in states:
        state_input.input_param.shape.add(dim=(1, layer.N, layer.num_output))
    cont_slice = add_layer(net_param, "Slice", "cont_slice", ["cont"])
    cont_slice.slice_param.axis = 0
    x_transform = inner_product(
        net_param, "x_transform", "x", f"{weight}_x", [weight, bias], width, param, bias=True
    )
    x_transform.propagate_down.append(True)
    if layer.static_input:
        static = inner_product(
            net_param,
            f"{weight}_x_static",
            "x_static",
            f"{weight}_x_static_preshape",
            [f"{weight}_static"],
            width,
            param,
            axis=1,
        )
        static.propagate_down.append(True)
        reshape = add_layer(
            net_param,
            "Reshape",
            f"{weight}_x_static_reshape",
            [f"{weight}_x_static_preshape"],
            [f"{weight}_x_static"],
        )
        reshape.reshape_param.shape.dim.extend([1, -1, width])  # -1: the batch may change
    x_slice = add_layer(net_param, "Slice", f"{weight}_x_slice", [f"{weight}_x"])
    x_slice.slice_param.axis = 0
    return cont_slice, x_slice


def add_step_front(layer, net_param, t: int, slices, weight: str, recurrent: str, name: str, width):
    """The start of timestep ``t``, shared by RNN and LSTM: the slices' tops for t, the
    flush ``h_conted_{t-1} = cont_t * h_{t-1}`` (the state is zeroed where a sequence
    starts) and the recurrent transform ``name``: ``recurrent * h_conted_{t-1}``.
    ``width`` is the transform's output size. Returns the blobs whose sum is the
    step's input (with the static term, if any).
    """
    cont_slice, x_slice = slices
    cont_slice.top.append(f"cont_{t}")
    x_slice.top.append(f"{weight}_x_{t}")
    flush = add_layer(
        net_param, "Scale", f"h_conted_{t - 1}", [f"h_{t - 1}", f"cont_{t}"], [f"h_conted_{t - 1}"]
    )
    flush.scale_param.axis = 0
    param = layer.layer_param.recurrent_param
    transformed = f"{recurrent}_h_{t - 1}"
    inner_product(net_param, name, f"h_conted_{t - 1}", transformed, [recurrent], width, param)
    sums = [transformed, f"{weight}_x_{t}"]
    if layer.static_input:
        sums.append(f"{weight}_x_static")
    return sums


class RecurrentLayer(Layer):
    """The unrolled-net machinery shared by RNN and LSTM (Caffe's RecurrentLayer)."""

    #: The unrolled net's outputs that become the layer's tops.
    output_names: tuple[str, ...] = ()

    def recurrent_input_names(self) -> list[str]:
        """The unrolled net's initial-state inputs (h_0, ...)."""
        raise NotImplementedError

    def recurrent_output_names(self) -> list[str]:
        """The unrolled net's final-state blobs, paired with the inputs (needs ``self.T``)."""
        raise NotImplementedError

    def fill_unrolled_net(self, net_param) -> None:
        """Add the architecture's layers (after the Input of x, cont, x_static)."""
        raise NotImplementedError

    def __init__(self, layer_param=None, phase=None):
        super().__init__(layer_param, phase)
        self.expose_hidden = self.layer_param.recurrent_param.expose_hidden
        hidden = len(self.recurrent_input_names()) if self.expose_hidden else 0
        self.min_bottom_blobs = 2 + hidden
        self.max_bottom_blobs = 3 + hidden
        self.exact_num_top_blobs = len(self.output_names) + hidden

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1  # never into the sequence-continuation indicators

    # ---- setup -----------------------------------------------------------------------
    def setup(self, bottom, top):
        from caffelite.net import Net

        self._check_time_axes(bottom)
        self.T, self.N = bottom[0].shape[:2]
        param = self.layer_param.recurrent_param
        self.num_output = param.num_output
        if self.num_output <= 0:
            raise self.error("recurrent_param.num_output must be positive")
        hidden = len(self.recurrent_input_names()) if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + hidden
        if self.static_input and (bottom[2].num_axes < 1 or bottom[2].shape[0] != self.N):
            raise self.error(
                f"the static input bottom[2] must be N x ... with N = {self.N} streams, "
                f"got shape {bottom[2].shape}"
            )
        net_param = caffe_pb2.NetParameter(name=self.name)
        inputs = [("x", bottom[0]), ("cont", bottom[1])]
        if self.static_input:
            inputs.append(("x_static", bottom[2]))
        layer = add_layer(net_param, "Input", "input", tops=[name for name, _ in inputs])
        for _, blob in inputs:
            layer.input_param.shape.add(dim=blob.shape)
        self.fill_unrolled_net(net_param)
        if self.name:
            for inner in net_param.layer:
                inner.name = f"{self.name}_{inner.name}"
        # Pseudo-losses make the Net backpropagate to every output; they never run.
        for name in self.output_names:
            add_layer(net_param, "Reduction", f"{name}_pseudoloss", [name], [f"{name}_pseudoloss"])
            net_param.layer[-1].loss_weight.append(1)
        self.net = Net(net_param, self.phase)
        self.last_layer = len(self.net.layers) - 1 - len(self.output_names)
        # Caffe's unrolled_net_->set_debug_info: the inner net logs Caffe's per-layer lines.
        self.net.debug_info = bool(param.debug_info)
        blobs = self.net.blobs
        self.recur_inputs = [blobs[name] for name in self.recurrent_input_names()]
        self.recur_outputs = [blobs[name] for name in self.recurrent_output_names()]
        self.outputs = [blobs[name] for name in self.output_names]
        self._adopt_parameters()

    def _check_time_axes(self, bottom) -> None:
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.error(
                f"bottom[0] must have at least 2 axes (timesteps, streams, ...), got {x.shape}"
            )
        if cont.shape != x.shape[:2]:
            raise self.error(
                f"bottom[1] (cont) must be T x N = {x.shape[:2]} to match bottom[0] "
                f"{x.shape}, got {cont.shape}"
            )

    def _adopt_parameters(self) -> None:
        """The layer's blobs are the unrolled net's owned parameters (Caffe's order);
        weights that came with the layer (a loaded model) are copied into them."""
        owned = [
            blob
            for blob, owner in zip(self.net._params, self.net.param_owners, strict=True)
            if owner == -1
        ]
        if not self.blobs_need_setup():
            if len(self.blobs) != len(owned):
                raise self.error(
                    f"expected {len(owned)} parameter blobs, got {len(self.blobs)} "
                    f"(shapes {[b.shape for b in owned]})"
                )
            for j, (loaded, blob) in enumerate(zip(self.blobs, owned, strict=True)):
                if loaded.count != blob.count:
                    raise self.error(
                        f"loaded parameter {j} has shape {loaded.shape}, expected {blob.shape}"
                    )
                blob.data[...] = loaded.data.reshape(blob.shape)
        self.blobs[:] = owned
        self.param_propagate_down = [True] * len(owned)

    # ---- reshape ---------------------------------------------------------------------
    def reshape(self, bottom, top):
        self._check_time_axes(bottom)
        if bottom[0].shape[0] != self.T:
            raise self.error(
                f"the number of timesteps changed: set up for T = {self.T}, bottom[0] is "
                f"{bottom[0].shape}"
            )
        self.N = bottom[0].shape[1]
        blobs = self.net.blobs
        x, cont = blobs["x"], blobs["cont"]
        x.reshape(bottom[0].shape)
        cont.reshape(bottom[1].shape)
        if self.static_input:
            if bottom[2].shape[:1] != (self.N,):
                raise self.error(
                    f"the static input bottom[2] must have N = {self.N} rows, got {bottom[2].shape}"
                )
            blobs["x_static"].reshape(bottom[2].shape)
        state_shape = (1, self.N, self.num_output)
        for blob in self.recur_inputs:
            blob.reshape(state_shape)
        self.net.reshape()
        x.share_data(bottom[0])
        x.share_diff(bottom[0])
        cont.share_data(bottom[1])
        if self.static_input:
            blobs["x_static"].share_data(bottom[2])
            blobs["x_static"].share_diff(bottom[2])
        if self.expose_hidden:
            offset = 2 + self.static_input
            for j, blob in enumerate(self.recur_inputs):
                given = bottom[offset + j]
                if given.shape != state_shape:
                    raise self.error(
                        f"the initial state bottom[{offset + j}] "
                        f"({self.recurrent_input_names()[j]}) must be {state_shape}, "
                        f"got {given.shape}"
                    )
                blob.share_data(given)
        for top_blob, output in zip(top, self.outputs, strict=False):
            top_blob.reshape(output.shape)
            top_blob.share_data(output)
            top_blob.share_diff(output)
        if self.expose_hidden:
            for top_blob, final in zip(top[len(self.outputs) :], self.recur_outputs, strict=True):
                top_blob.reshape(final.shape)
                top_blob.share_data(final)

    def reset(self) -> None:
        """Forget the carried-over state: zero the final state of the last batch."""
        for blob in self.recur_outputs:
            blob.data[...] = 0

    # ---- forward / backward ------------------------------------------------------------
    def forward(self, bottom, top):
        if not self.expose_hidden:
            for start, final in zip(self.recur_inputs, self.recur_outputs, strict=True):
                start.data[...] = final.data if final.shape == start.shape else 0
        for layer_id in range(self.last_layer + 1):
            self.net.forward_layer(layer_id)

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to the sequence indicators (bottom[1], cont)")
        for layer_id in range(self.last_layer, -1, -1):
            self.net.backward_layer(layer_id)
        if self.expose_hidden:
            offset = 2 + self.static_input
            for j in range(len(self.recur_inputs)):
                if propagate_down[offset + j]:
                    bottom[offset + j].diff[...] = 0
