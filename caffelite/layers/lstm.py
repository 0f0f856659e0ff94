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
    add_layer,
    add_shared_front,
    add_step_front,
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
        slices = add_shared_front(self, net_param, ["c_0", "h_0"], "W_xc", "b_c", 4 * hidden)
        concat = []
        for t in range(1, self.T + 1):
            sums = add_step_front(
                self, net_param, t, slices, "W_xc", "W_hc", f"transform_{t}", 4 * hidden
            )
            add_layer(net_param, "Eltwise", f"gate_input_{t}", sums, [f"gate_input_{t}"])
            add_layer(
                net_param, "LSTMUnit", f"unit_{t}",
                [f"c_{t - 1}", f"gate_input_{t}", f"cont_{t}"], [f"c_{t}", f"h_{t}"],
            )  # fmt: skip
            concat.append(f"h_{t}")
        add_layer(net_param, "Split", "c_T_copy", [f"c_{self.T}"], ["c_T"])
        add_layer(net_param, "Concat", "h_concat", concat, ["h"]).concat_param.axis = 0
