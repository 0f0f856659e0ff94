"""Caffe's AVE pooling divisor along one axis, for the ONNX exporter and importer.

Caffe divides each window's sum by the window clipped to the *padded* image
(``[-pad, size + pad)``), not by the cells inside the image, nor by the full kernel;
ONNX's AveragePool offers neither rule exactly, so both directions compare against this.
"""

from __future__ import annotations


def caffe_average_divisors(size: int, kernel: int, stride: int, pad: int, pooled: int):
    """Per-window divisors for ``pooled`` windows along one axis."""
    divisors = []
    for p in range(pooled):
        start = p * stride - pad
        divisors.append(min(start + kernel, size + pad) - start)
    return divisors
