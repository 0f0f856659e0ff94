"""RNN (Caffe's RNNLayer): a simple tanh recurrence with a tanh output layer.

Per timestep t::

    h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
    o_t = tanh(W_ho h_t + b_o)

The parameters, in Caffe's order: ``W_xh``, ``b_h``, ``W_xh_static`` (with a static
input), ``W_hh``, ``W_ho``, ``b_o``.
"""

from __future__ import annotations

from caffelite.layer import register_layer
from caffelite.layers.recurrent import (
    RecurrentLayer,
    add_layer,
    add_shared_front,
    add_step_front,
    inner_product,
)


@register_layer("RNN")
class RNNLayer(RecurrentLayer):
    output_names = ("o",)

    def recurrent_input_names(self):
        return ["h_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}"]

    def fill_unrolled_net(self, net_param):
        hidden = self.num_output
        param = self.layer_param.recurrent_param
        slices = add_shared_front(self, net_param, ["h_0"], "W_xh", "b_h", hidden)
        concat = []
        for t in range(1, self.T + 1):
            sums = add_step_front(
                self, net_param, t, slices, "W_xh", "W_hh", f"W_hh_h_{t - 1}", hidden
            )
            add_layer(net_param, "Eltwise", f"h_input_sum_{t}", sums, [f"h_neuron_input_{t}"])
            add_layer(net_param, "TanH", f"h_neuron_{t}", [f"h_neuron_input_{t}"], [f"h_{t}"])
            inner_product(
                net_param, f"W_ho_h_{t}", f"h_{t}", f"W_ho_h_{t}",
                ["W_ho", "b_o"], hidden, param, bias=True,
            )  # fmt: skip
            add_layer(net_param, "TanH", f"o_neuron_{t}", [f"W_ho_h_{t}"], [f"o_{t}"])
            concat.append(f"o_{t}")
        add_layer(net_param, "Concat", "o_concat", concat, ["o"]).concat_param.axis = 0
