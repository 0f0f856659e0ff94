"""Plain-numpy LSTM and RNN recurrences, one timestep at a time (the tests' references)."""

import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_unit(c_prev, gates, cont):
    """One LSTMUnit step on (N, H) state, (N, 4H) gates and (N,) cont."""
    h = c_prev.shape[-1]
    i, f, o = sigmoid(gates[:, :h]), sigmoid(gates[:, h : 2 * h]), sigmoid(gates[:, 2 * h : 3 * h])
    g = np.tanh(gates[:, 3 * h :])
    c = cont[:, None] * f * c_prev + i * g
    return c, o * np.tanh(c)


def lstm(x, cont, w_xc, b_c, w_hc, h0=None, c0=None, x_static=None, w_static=None):
    """Outputs (T, N, H) and the final (h, c), as Caffe's unrolled LSTM computes them."""
    steps, num = cont.shape
    hidden = w_hc.shape[1]
    h = np.zeros((num, hidden)) if h0 is None else h0
    c = np.zeros((num, hidden)) if c0 is None else c0
    outputs = []
    for t in range(steps):
        gates = x[t].reshape(num, -1) @ w_xc.T + b_c + (cont[t][:, None] * h) @ w_hc.T
        if x_static is not None:
            gates = gates + x_static.reshape(num, -1) @ w_static.T
        c, h = lstm_unit(c, gates, cont[t])
        outputs.append(h)
    return np.stack(outputs), h, c


def rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, h0=None, x_static=None, w_static=None):
    """Outputs o (T, N, H) and the final h, as Caffe's unrolled RNN computes them."""
    steps, num = cont.shape
    h = np.zeros((num, w_hh.shape[0])) if h0 is None else h0
    outputs = []
    for t in range(steps):
        pre = x[t].reshape(num, -1) @ w_xh.T + b_h + (cont[t][:, None] * h) @ w_hh.T
        if x_static is not None:
            pre = pre + x_static.reshape(num, -1) @ w_static.T
        h = np.tanh(pre)
        outputs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outputs), h
