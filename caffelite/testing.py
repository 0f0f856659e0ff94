"""Shared test helpers: one gradient checker and one declarative layer check.

``check_gradient`` follows Caffe's GradientChecker: the objective is a random
weighting of the tops, ``L = sum_i <w_i, top_i>``; the analytic gradient comes from
``backward`` with ``top.diff = w`` and is compared with central differences of
``L``. Run it in float64 (``backend.precision``): float32 with eps 1e-6 only
measures rounding noise. Large blobs are checked along random directions
instead of element by element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from google.protobuf import text_format

from caffelite import backend
from caffelite.blob import Blob
from caffelite.layer import TRAIN, Layer, create_layer
from caffelite.proto import caffe_pb2


def layer_param_from_text(text: str, type_name: str | None = None):
    """A LayerParameter from prototxt text (``type`` may be given separately)."""
    param = caffe_pb2.LayerParameter()
    text_format.Merge(text, param)
    if type_name is not None:
        param.type = type_name
    if not param.name:
        param.name = param.type.lower() or "layer"
    return param


def build_layer(
    layer_text: str,
    bottom_arrays: Sequence[np.ndarray],
    *,
    num_top: int = 1,
    phase: int = TRAIN,
    dtype=np.float64,
) -> tuple[Layer, list[Blob], list[Blob]]:
    """Create, set up and reshape a layer on bottoms holding copies of ``bottom_arrays``."""
    with backend.precision(dtype):
        param = layer_param_from_text(layer_text)
        layer = create_layer(param, phase)
        bottom = []
        for array in bottom_arrays:
            blob = Blob(np.shape(array))
            blob.data[...] = array
            bottom.append(blob)
        top = [Blob() for _ in range(num_top)]
        layer.setup_layer(bottom, top)
    return layer, bottom, top


def _objective(layer, bottom, top, weights) -> float:
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return float(sum(np.vdot(w, t.data) for w, t in zip(weights, top, strict=True)))


def check_gradient(
    layer: Layer,
    bottom: list[Blob],
    top: list[Blob],
    *,
    bottom_indices: Sequence[int] | None = None,
    check_params: bool = True,
    top_indices: Sequence[int] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    kink: float | None = None,
    kink_range: float = -1.0,
    max_elements: int = 4000,
    directions: int = 20,
    seed: int = 1701,
) -> None:
    """Assert that ``backward`` matches central differences; raise AssertionError if not.

    ``kink``/``kink_range`` skip elements whose bottom value lies within
    ``kink_range`` of ``kink`` (ReLU at 0): the derivative is undefined there.
    ``top_indices`` restricts the objective to some tops (others get weight 0).
    """
    rng = np.random.default_rng(seed)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    wanted_tops = range(len(top)) if top_indices is None else top_indices
    weights = [
        rng.standard_normal(t.shape) if i in wanted_tops else np.zeros(t.shape)
        for i, t in enumerate(top)
    ]
    if bottom_indices is None:
        bottom_indices = range(len(bottom))
    checked: list[tuple[str, Blob, np.ndarray | None]] = []
    for i in bottom_indices:
        source = bottom[i].data.copy()
        checked.append((f"bottom[{i}]", bottom[i], source))
    if check_params:
        checked += [(f"param[{j}]", b, None) for j, b in enumerate(layer.blobs)]

    # analytic gradients
    for blob in layer.blobs:
        blob.diff[...] = 0
    for w, t in zip(weights, top, strict=True):
        t.diff[...] = w
    propagate = [i in bottom_indices for i in range(len(bottom))]
    for i, blob in enumerate(bottom):
        if propagate[i]:
            blob.diff[...] = 0
    layer.backward(top, propagate, bottom)
    analytic = {name: blob.diff.copy() for name, blob, _ in checked}

    for name, blob, source in checked:
        grad = analytic[name].ravel()
        original = blob.data.reshape(-1).copy()
        kinks = source.ravel() if source is not None else None
        for probe, label in _probes(original.size, max_elements, directions, rng):
            if kink is not None and kinks is not None:
                touched = probe != 0
                if np.any(np.abs(kinks[touched] - kink) < kink_range):
                    continue
            # blob.data afresh for every write: in GPU mode that is what marks the host
            # copy as the one to sync (a view kept from before would be written unseen)
            blob.data.reshape(-1)[...] = original + eps * probe
            plus = _objective(layer, bottom, top, weights)
            blob.data.reshape(-1)[...] = original - eps * probe
            minus = _objective(layer, bottom, top, weights)
            blob.data.reshape(-1)[...] = original
            numeric = (plus - minus) / (2 * eps)
            estimate = float(np.dot(grad, probe))
            scale = max(abs(numeric), abs(estimate))
            if abs(numeric - estimate) > atol + rtol * scale:
                raise AssertionError(
                    f"{layer.type} gradient mismatch for {name} at {label}: "
                    f"backward gives {estimate:.8g}, finite differences give {numeric:.8g}"
                )
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


def _probes(size: int, max_elements: int, directions: int, rng):
    """Unit vectors for small blobs, random directions for large ones (made lazily)."""
    if size <= max_elements:
        for k in range(size):
            probe = np.zeros(size)
            probe[k] = 1.0
            yield probe, f"element {k}"
    else:
        for k in range(directions):
            yield rng.standard_normal(size), f"random direction {k}"


def check_layer(
    layer_text: str,
    bottom_arrays: Sequence[np.ndarray],
    *,
    reference: Callable[..., Sequence[np.ndarray] | np.ndarray] | None = None,
    num_top: int = 1,
    phase: int = TRAIN,
    gradient: bool = True,
    forward_rtol: float = 1e-10,
    forward_atol: float = 1e-10,
    **gradient_options,
) -> tuple[Layer, list[Blob], list[Blob]]:
    """The declarative layer test: shapes and forward against ``reference``, inputs
    unchanged, gradients by finite differences, parameter diffs accumulate, and the
    LayerParameter survives a prototxt round trip.

    ``reference(*bottom_arrays, *param_arrays)`` returns the expected top array(s).
    """
    layer, bottom, top = build_layer(layer_text, bottom_arrays, num_top=num_top, phase=phase)
    inputs = [b.data.copy() for b in bottom]
    layer.forward(bottom, top)
    for k, (before, blob) in enumerate(zip(inputs, bottom, strict=True)):
        np.testing.assert_array_equal(blob.data, before, err_msg=f"forward changed bottom[{k}]")
    if reference is not None:
        expected = reference(*inputs, *[b.data.copy() for b in layer.blobs])
        if isinstance(expected, np.ndarray):
            expected = [expected]
        for k, (want, blob) in enumerate(zip(expected, top, strict=True)):
            assert blob.shape == tuple(np.shape(want)), (
                f"top[{k}] shape {blob.shape}, reference {np.shape(want)}"
            )
            np.testing.assert_allclose(
                blob.data,
                want,
                rtol=forward_rtol,
                atol=forward_atol,
                err_msg=f"{layer.type} forward top[{k}]",
            )
    if gradient:
        check_gradient(layer, bottom, top, **gradient_options)
        _check_param_diff_accumulates(layer, bottom, top)
    round_trip = caffe_pb2.LayerParameter()
    text_format.Merge(text_format.MessageToString(layer.layer_param), round_trip)
    assert round_trip == layer.layer_param
    return layer, bottom, top


def _check_param_diff_accumulates(layer, bottom, top) -> None:
    """Two backward passes without clearing must give twice the parameter diffs."""
    if not layer.blobs:
        return
    propagate = [False] * len(bottom)
    for t in top:
        t.diff[...] = 1.0
    for b in layer.blobs:
        b.diff[...] = 0
    layer.backward(top, propagate, bottom)
    once = [b.diff.copy() for b in layer.blobs]
    layer.backward(top, propagate, bottom)
    for j, (first, blob) in enumerate(zip(once, layer.blobs, strict=True)):
        np.testing.assert_allclose(
            blob.diff,
            2 * first,
            rtol=1e-10,
            atol=1e-12,
            err_msg=f"{layer.type} param[{j}] diff does not accumulate",
        )
