"""LSTMUnit (Caffe's LSTMUnitLayer): one LSTM timestep, the cell of the LSTM layer.

Bottoms: ``c_{t-1}`` (1 x N x H), the gate pre-activations (1 x N x 4H, stacked as
input, forget, output, candidate) and ``cont_t`` (1 x N). Tops: ``c_t`` and ``h_t``::

    i, f, o = sigmoid(gates[i, f, o]);  g = tanh(gates[g])
    c_t = cont_t * f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

No gradient flows to ``cont``. The forget gate's gradient is the exact derivative
``cont * f (1 - f)``; Caffe writes ``f' (1 - f')`` with ``f' = cont * f``, which is
the same for the 0/1 indicators sequences use.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.layers.activations import sigmoid_forward


@register_layer("LSTMUnit")
class LSTMUnitLayer(Layer):
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        if c_prev.num_axes != 3 or c_prev.shape[0] != 1:
            raise self.error(f"bottom[0] (c_prev) must be 1 x N x H, got {c_prev.shape}")
        _, num, hidden = c_prev.shape
        if gates.shape != (1, num, 4 * hidden):
            raise self.error(
                f"bottom[1] (gates) must be 1 x N x 4H = {(1, num, 4 * hidden)} for c_prev "
                f"{c_prev.shape}, got {gates.shape}"
            )
        if cont.shape != (1, num):
            raise self.error(f"bottom[2] (cont) must be 1 x N = {(1, num)}, got {cont.shape}")
        self.hidden = hidden
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)

    def _split(self, array):
        h = self.hidden
        return array[..., :h], array[..., h : 2 * h], array[..., 2 * h : 3 * h], array[..., 3 * h :]

    def forward(self, bottom, top):
        xp = self.xp
        c_prev, gates, cont = (b.data for b in bottom)
        acts = xp.empty_like(gates)
        h = self.hidden
        sigmoid_forward(xp, gates[..., : 3 * h], acts[..., : 3 * h])
        xp.tanh(gates[..., 3 * h :], out=acts[..., 3 * h :])
        self.acts = acts
        i, f, o, g = self._split(acts)
        c, hidden = top[0].data, top[1].data
        xp.multiply(f, c_prev, out=c)
        c *= cont[..., None]
        c += i * g
        xp.tanh(c, out=hidden)
        hidden *= o

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the sequence indicators (bottom[2], cont)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = self.xp
        c_prev, cont = bottom[0].data, bottom[2].data[..., None]
        i, f, o, g = self._split(self.acts)
        tanh_c = xp.tanh(top[0].data)
        dc, dh = top[0].diff, top[1].diff
        c_term = dh * o * (1 - tanh_c * tanh_c) + dc
        if propagate_down[0]:
            xp.multiply(c_term, f * cont, out=bottom[0].diff)
        if propagate_down[1]:
            di, df, do, dg = self._split(bottom[1].diff)
            xp.multiply(c_term, g * i * (1 - i), out=di)
            xp.multiply(c_term, c_prev * cont * f * (1 - f), out=df)
            xp.multiply(dh, tanh_c * o * (1 - o), out=do)
            xp.multiply(c_term, i * (1 - g * g), out=dg)
