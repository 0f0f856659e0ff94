"""DummyData: shapes (new and legacy form), fillers per top, Caffe's refill rule."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.rng import set_random_seed
from caffelite.testing import build_layer, check_layer


def _layer(params, num_top=1, dtype=np.float64):
    return build_layer(
        f'type: "DummyData" dummy_data_param {{ {params} }}', [], num_top=num_top, dtype=dtype
    )


def test_default_is_constant_zero():
    layer, bottom, top = _layer("shape { dim: 2 dim: 3 }")
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3)
    np.testing.assert_array_equal(top[0].data, 0.0)


def test_one_shape_and_filler_for_all_tops():
    layer, bottom, top = _layer(
        "shape { dim: 4 dim: 5 } data_filler { type: 'constant' value: 3 }", num_top=3
    )
    layer.forward(bottom, top)
    for blob in top:
        assert blob.shape == (4, 5)
        np.testing.assert_array_equal(blob.data, 3.0)


def test_shape_and_filler_per_top():
    layer, bottom, top = _layer(
        "shape { dim: 2 dim: 3 } shape { dim: 5 } "
        "data_filler { type: 'constant' value: 1.5 } "
        "data_filler { type: 'uniform' min: 2 max: 3 }",
        num_top=2,
    )
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3)
    assert top[1].shape == (5,)
    np.testing.assert_array_equal(top[0].data, 1.5)
    assert np.all((top[1].data >= 2) & (top[1].data <= 3))


def test_legacy_dimensions():
    layer, bottom, top = _layer("num: 2 channels: 3 height: 4 width: 5 num: 6", num_top=2)
    assert top[0].shape == (2, 3, 4, 5)
    assert top[1].shape == (6, 3, 4, 5)


def test_constant_filled_once_random_refilled_every_forward():
    set_random_seed(5)
    layer, bottom, top = _layer(
        "shape { dim: 3 dim: 4 } data_filler { type: 'constant' value: 2 } "
        "data_filler { type: 'gaussian' std: 1 }",
        num_top=2,
    )
    np.testing.assert_array_equal(top[0].data, 2.0)  # filled at setup
    top[0].data[...] = -1.0  # not refilled: a constant top is left alone
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, -1.0)
    first = top[1].data.copy()
    layer.forward(bottom, top)
    second = top[1].data.copy()
    assert not np.array_equal(first, second)
    assert np.all(second != 0)


def test_single_random_filler_refills_all_tops():
    layer, bottom, top = _layer(
        "shape { dim: 50 } data_filler { type: 'uniform' min: -1 max: 1 }", num_top=2
    )
    layer.forward(bottom, top)
    before = [t.data.copy() for t in top]
    layer.forward(bottom, top)
    for old, blob in zip(before, top, strict=True):
        assert not np.array_equal(old, blob.data)
        assert np.all(np.abs(blob.data) <= 1)


def test_reproducible_with_seed():
    runs = []
    for _ in range(2):
        set_random_seed(11)
        layer, bottom, top = _layer("shape { dim: 6 } data_filler { type: 'gaussian' }")
        layer.forward(bottom, top)
        runs.append(top[0].data.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_float32():
    layer, bottom, top = _layer(
        "shape { dim: 3 } data_filler { type: 'constant' value: 0.1 }", dtype=np.float32
    )
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, np.float32(0.1))


def test_check_layer_round_trip():
    check_layer(
        'type: "DummyData" dummy_data_param { shape { dim: 2 } '
        "data_filler { type: 'constant' value: 4 } }",
        [],
        reference=lambda: np.full(2, 4.0),
        gradient=False,
    )


# ---- errors ---------------------------------------------------------------------------


def test_wrong_number_of_fillers():
    with pytest.raises(CaffeliteError, match=r"0, 1 or one data_filler per top \(3 tops\).*got 2"):
        _layer("shape { dim: 2 } data_filler { } data_filler { }", num_top=3)


def test_wrong_number_of_shapes():
    with pytest.raises(CaffeliteError, match=r"'shape' once or once per top \(3 tops\).*got 2"):
        _layer("shape { dim: 2 } shape { dim: 3 }", num_top=3)


def test_no_shape():
    with pytest.raises(CaffeliteError, match=r"'shape' once or once per top \(1 tops\).*got 0"):
        _layer("")


def test_shape_and_legacy_together():
    with pytest.raises(CaffeliteError, match="either shape or the legacy"):
        _layer("shape { dim: 2 } num: 2 channels: 1 height: 1 width: 1")


def test_legacy_field_count():
    with pytest.raises(CaffeliteError, match=r"'height' once or once per top \(2 tops\).*got 0"):
        _layer("num: 2 channels: 3 width: 4", num_top=2)


def test_no_bottoms_allowed():
    with pytest.raises(CaffeliteError, match="exactly 0 bottom"):
        build_layer('type: "DummyData" dummy_data_param { shape { dim: 2 } }', [np.zeros(2)])


def test_needs_a_top():
    with pytest.raises(CaffeliteError, match="at least 1 top"):
        build_layer('type: "DummyData" dummy_data_param { shape { dim: 2 } }', [], num_top=0)
