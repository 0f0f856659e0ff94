"""The N-d im2col / col2im kernels on a C3D-sized layer, against numpy's strided copies.

    python benchmarks/conv_nd_im2col.py [--threads 1] [--repeats 20] [--batch 1]

Case: C3D's conv2-like layer, input 1 x 64 x 8 x 28 x 28 (float32), a 3x3x3 window with
pad 1 (columns 64*27 x 8*28*28: 10.8 M values, 43 MB). Rows:

* ``kernels nd``: caffelite's ``im2col_nd`` / ``col2im_nd``, batch-first and batch-last;
* ``numpy slices``: the best plain-numpy route, one strided slice copy (or add) per
  kernel cell from a padded copy of the input (27 copies);
* ``numpy sliding_window_view``: a strided view of the padded input, made contiguous;
* a 2-D case (64 x 56 x 56, 3x3, pad 1) through the 2-D kernels and through the N-d ones
  (``force_nd_im2col``), to show what the general kernel costs where a specialised one exists;
* the whole Convolution layer (64 -> 64 outputs) forward and backward.

Medians of ``--repeats`` runs after a warm-up (the first call compiles). Timings are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def numpy_slices_im2col(x, col, kernel, pad):
    """col[:, :, *cell] = padded[:, :, cell + out-window] for each kernel cell (stride 1)."""
    import itertools

    import numpy as np

    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = col.shape[2 + len(kernel) :]
    for cell in itertools.product(*map(range, kernel)):
        window = tuple(slice(k, k + o) for k, o in zip(cell, out, strict=True))
        col[(slice(None), slice(None), *cell)] = padded[(..., *window)]


def numpy_slices_col2im(col, dx, kernel, pad):
    import itertools

    import numpy as np

    spatial = dx.shape[2:]
    padded = np.zeros(
        dx.shape[:2] + tuple(s + 2 * p for s, p in zip(spatial, pad, strict=True)), dx.dtype
    )
    out = col.shape[2 + len(kernel) :]
    for cell in itertools.product(*map(range, kernel)):
        window = tuple(slice(k, k + o) for k, o in zip(cell, out, strict=True))
        padded[(..., *window)] += col[(slice(None), slice(None), *cell)]
    dx[...] = padded[(..., *(slice(p, p + s) for p, s in zip(pad, spatial, strict=True)))]


def numpy_window_view_im2col(x, col, kernel, pad):
    import numpy as np

    axes = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    view = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=tuple(range(2, 2 + axes)))
    # view: (n, C, *out, *kernel) -> (n, C, *kernel, *out)
    order = (0, 1, *range(2 + axes, 2 + 2 * axes), *range(2, 2 + axes))
    np.copyto(col, view.transpose(order))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np

    from caffelite import im2col, kernels
    from caffelite.im2col import BATCH_FIRST, BATCH_LAST, Geometry
    from caffelite.testing import build_layer

    rng = np.random.default_rng(0)
    rows = []

    def measure(label, function):
        rows.append((label, median_ms(function, args.repeats)))

    n = args.batch
    geometry = Geometry((3, 3, 3), pad=(1, 1, 1))
    x = rng.standard_normal((n, 64, 8, 28, 28)).astype(np.float32)
    out = geometry.output_shape(*x.shape[2:])
    g = geometry
    for layout in (BATCH_FIRST, BATCH_LAST):
        col = np.empty(im2col.col_shape(layout, n, 64, out, g), np.float32)
        dx = np.empty_like(x)
        last = layout == BATCH_LAST
        measure(
            f"3-D im2col  kernels nd ({layout})",
            lambda col=col, last=last: kernels.im2col_nd(
                x, col, g.kernel, g.stride, g.pad, g.dilation, last
            ),
        )
        measure(
            f"3-D col2im  kernels nd ({layout})",
            lambda col=col, dx=dx, last=last: kernels.col2im_nd(
                col, dx, g.kernel, g.stride, g.pad, g.dilation, last
            ),
        )
    col = np.empty(im2col.col_shape(BATCH_FIRST, n, 64, out, g), np.float32)
    reference = col.copy()
    kernels.im2col_nd(x, reference, g.kernel, g.stride, g.pad, g.dilation, False)
    numpy_slices_im2col(x, col, g.kernel, g.pad)
    np.testing.assert_array_equal(col, reference)
    numpy_window_view_im2col(x, col, g.kernel, g.pad)
    np.testing.assert_array_equal(col, reference)
    measure("3-D im2col  numpy slices", lambda: numpy_slices_im2col(x, col, g.kernel, g.pad))
    measure(
        "3-D im2col  numpy sliding_window_view",
        lambda: numpy_window_view_im2col(x, col, g.kernel, g.pad),
    )
    dx = np.empty_like(x)
    measure("3-D col2im  numpy slices", lambda: numpy_slices_col2im(col, dx, g.kernel, g.pad))

    flat = Geometry((3, 3), pad=(1, 1))
    x2 = rng.standard_normal((n, 64, 56, 56)).astype(np.float32)
    col2 = np.empty(im2col.col_shape(BATCH_FIRST, n, 64, (56, 56), flat), np.float32)
    dx2 = np.empty_like(x2)
    for forced in (False, True):
        which = "kernels nd (forced)" if forced else "kernels 2-D"
        measure(
            f"2-D im2col  {which}", lambda f=forced: im2col.im2col(x2, BATCH_FIRST, flat, col2, f)
        )
        measure(
            f"2-D col2im  {which}", lambda f=forced: im2col.col2im(col2, BATCH_FIRST, flat, dx2, f)
        )

    layer, bottom, top = build_layer(
        'type: "Convolution" convolution_param { num_output: 64 kernel_size: 3 pad: 1 '
        'weight_filler { type: "xavier" } }',
        [x],
        dtype=np.float32,
    )

    def backward():
        layer.backward(top, [True], bottom)

    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    measure(f"Convolution 3-D forward  ({layer.layout})", lambda: layer.forward(bottom, top))
    measure(f"Convolution 3-D backward ({layer.layout})", backward)

    print(
        f"input {x.shape} float32, 3x3x3 pad 1, threads {args.threads}, medians of {args.repeats}"
    )
    width = max(len(label) for label, _ in rows)
    for label, ms in rows:
        print(f"{label:<{width}}  {ms:9.2f} ms")


if __name__ == "__main__":
    main()
