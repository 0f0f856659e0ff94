"""LSTM (Caffe's LSTMLayer): the unrolled net of one LSTMUnit per timestep.

Per timestep t, with the gates' pre-activations stacked as (i, f, o, g)::

    gate_input_t = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
    c_t, h_t     = LSTMUnit(c_{t-1}, gate_input_t, cont_t)

The parameters, in Caffe's order: ``W_xc`` (4H x D), ``b_c`` (4H), ``W_xc_static``
(4H x D_static, with a static input) and ``W_hc`` (4H x H).
"""

from __future__ import annotations

from caffelite.layer import register_layer
from caffelite.layers.recurrent import (
    RecurrentLayer,
    add_flush,
    add_layer,
    add_shared_front,
    inner_product,
)


@register_layer("LSTM")
class LSTMLayer(RecurrentLayer):
    output_names = ("h",)

    def recurrent_input_names(self):
        return ["h_0", "c_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}", "c_T"]

    def fill_unrolled_net(self, net_param):
        hidden = self.num_output
        param = self.layer_param.recurrent_param
        cont_slice, x_slice = add_shared_front(
            self, net_param, ["c_0", "h_0"], "W_xc", "b_c", 4 * hidden
        )
        concat = []
        for t in range(1, self.T + 1):
            cont_slice.top.append(f"cont_{t}")
            x_slice.top.append(f"W_xc_x_{t}")
            add_flush(net_param, t)
            inner_product(
                net_param, f"transform_{t}", f"h_conted_{t - 1}", f"W_hc_h_{t - 1}",
                ["W_hc"], 4 * hidden, param,
            )  # fmt: skip
            sums = [f"W_hc_h_{t - 1}", f"W_xc_x_{t}"]
            if self.static_input:
                sums.append("W_xc_x_static")
            add_layer(net_param, "Eltwise", f"gate_input_{t}", sums, [f"gate_input_{t}"])
            add_layer(
                net_param, "LSTMUnit", f"unit_{t}",
                [f"c_{t - 1}", f"gate_input_{t}", f"cont_{t}"], [f"c_{t}", f"h_{t}"],
            )  # fmt: skip
            concat.append(f"h_{t}")
        add_layer(net_param, "Split", "c_T_copy", [f"c_{self.T}"], ["c_T"])
        add_layer(net_param, "Concat", "h_concat", concat, ["h"]).concat_param.axis = 0
