"""pycaffe's per-layer hooks: Net.before_forward / after_forward / before_backward /
after_backward, called with the layer index in run order (also layers without backward)."""

from __future__ import annotations

import solver_nets as sn

import caffelite as caffe


def test_hooks_run_around_every_layer_in_order():
    solver = sn.make_solver(caffe.SGDSolver)
    net, calls = solver.net, []
    for kind in ("before_forward", "after_forward", "before_backward", "after_backward"):
        getattr(net, kind)(lambda layer_id, kind=kind: calls.append((kind, layer_id)))
    net.forward_backward()
    forward = [(k, i) for i in range(3) for k in ("before_forward", "after_forward")]
    backward = [(k, i) for i in (2, 1, 0) for k in ("before_backward", "after_backward")]
    assert calls == forward + backward
