"""Per-layer forward and backward timings of a net (what ``caffe time`` reports)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TimingReport:
    iterations: int
    layer_names: list[str]
    forward_ms: list[float] = field(default_factory=list)
    backward_ms: list[float] = field(default_factory=list)

    @property
    def forward_total_ms(self) -> float:
        return sum(self.forward_ms)

    @property
    def backward_total_ms(self) -> float:
        return sum(self.backward_ms)

    def lines(self) -> list[str]:
        width = max(len(name) for name in self.layer_names)
        out = ["Average time per layer:"]
        rows = zip(self.layer_names, self.forward_ms, self.backward_ms, strict=True)
        for name, fwd, bwd in rows:
            out.append(f"{name:>{width}}\tforward: {fwd:.4f} ms.")
            out.append(f"{name:>{width}}\tbackward: {bwd:.4f} ms.")
        out += [
            f"Average Forward pass: {self.forward_total_ms:.4f} ms.",
            f"Average Backward pass: {self.backward_total_ms:.4f} ms.",
            f"Average Forward-Backward: {self.forward_total_ms + self.backward_total_ms:.4f} ms.",
        ]
        return out


def time_net(net, iterations: int = 50, warmup: int = 1) -> TimingReport:
    """Time each layer's reshape+forward and backward, averaged over ``iterations``."""
    for _ in range(warmup):
        net.forward_backward()
    n = len(net.layers)
    forward = [0.0] * n
    backward = [0.0] * n
    clock = time.perf_counter
    for _ in range(iterations):
        for i in range(n):
            start = clock()
            net.forward_layer(i)
            forward[i] += clock() - start
        for i in reversed(range(n)):
            start = clock()
            net.backward_layer(i)
            backward[i] += clock() - start
    scale = 1000.0 / max(iterations, 1)
    return TimingReport(
        iterations,
        list(net._layer_names),
        [t * scale for t in forward],
        [t * scale for t in backward],
    )
