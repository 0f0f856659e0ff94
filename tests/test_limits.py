"""Sizes that cannot fit are refused before allocation, naming layer, blob, shape, bytes."""

import numpy as np
import pytest
from google.protobuf import text_format

import caffelite
from caffelite import limits
from caffelite.errors import CaffeliteError
from caffelite.net import Net
from caffelite.proto import caffe_pb2


def _net(text: str, phase=caffelite.TEST) -> Net:
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def _ip(num_output: int, batch: int = 2) -> str:
    return f"""
    layer {{ name: "data" type: "Input" top: "data"
             input_param {{ shape {{ dim: {batch} dim: 3 }} }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
             inner_product_param {{ num_output: {num_output} }} }}
    """


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    limits.set_memory_limit(None)
    yield
    limits.set_memory_limit(None)


def test_parameter_blob_too_large_names_layer_blob_shape_and_bytes():
    with limits.memory_limit("1M"):
        with pytest.raises(CaffeliteError) as info:
            _net(_ip(num_output=2**20))
    message = str(info.value)
    assert "layer 'ip' (type InnerProduct): parameter blob 0 of shape (1048576, 3)" in message
    assert "12.0 MiB (12582912 bytes)" in message
    assert "memory limit of 1.0 MiB (set by caffelite.set_memory_limit)" in message


def test_top_blob_too_large_is_named():
    with limits.memory_limit("1M"):
        with pytest.raises(
            CaffeliteError,
            match=r"layer 'data' \(type Input\): top blob 'data' "
            r"of shape \(1048576, 3\) needs 12\.0 MiB",
        ):
            _net(_ip(num_output=1, batch=2**20))


def test_overflowing_shape_is_refused_against_available_memory():
    """No limit set: 2^31-1 squared kernels exceed any machine, and say so at once."""
    text = """
    layer { name: "data" type: "Input" top: "data"
            input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 2147483647 } }
    """
    with pytest.raises(CaffeliteError) as info:
        _net(text)
    message = str(info.value)
    assert "layer 'conv' (type Convolution)" in message
    assert "(2, 1, 2147483647, 2147483647)" in message
    assert "the memory available to this process" in message


def test_work_array_too_large_is_named():
    # A pad of 2000 makes the output and its im2col buffer far larger than the 1 MiB limit.
    text = """
    layer { name: "data" type: "Input" top: "data"
            input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 1 kernel_size: 3 pad: 2000 } }
    """
    with limits.memory_limit("1M"):
        with pytest.raises(
            CaffeliteError,
            match=r"layer 'conv' \(type Convolution\): .*of "
            r"shape \(.*\) needs .* more than the memory limit of 1\.0 MiB",
        ):
            _net(text).forward()


def test_a_pooling_window_past_the_input_is_refused():
    """Caffe's ceil rounding with a huge stride adds a window wholly outside the input."""
    text = """
    layer { name: "data" type: "Input" top: "data"
            input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
            pooling_param { pool: MAX kernel_size: 2 stride: 1048576 } }
    """
    with pytest.raises(
        CaffeliteError,
        match=r"layer 'pool' \(type Pooling\): the last pooling "
        r"window starts outside the input: input 8x8, kernel 2x2, stride "
        r"1048576x1048576, pad 0x0 give 2x2 windows",
    ):
        _net(text)


def test_blobs_that_fit_alone_but_not_together_are_refused_before_forward():
    # 4 x 65536 floats per top, data and diff: about 2 MiB each, 4 MiB in all.
    text = (
        _ip(num_output=65536, batch=4).replace('top: "ip"', 'top: "ip" param { lr_mult: 1 }')
        + 'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "ip2" top: "loss" }'
    )
    text = text.replace(
        'layer { name: "loss"',
        'layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2" '
        'inner_product_param { num_output: 65536 } }\nlayer { name: "loss"',
    )
    with limits.memory_limit("3M"):
        with pytest.raises(
            CaffeliteError,
            match=r"net '' needs 4\.0 MiB for its blobs \(data "
            r"and diff\).*the largest: 'ip2' \(4, 65536\) 2\.0 MiB, 'ip'",
        ):
            _net(text, caffelite.TRAIN)
    with limits.memory_limit("8M"):
        _net(text, caffelite.TRAIN)  # fits


def test_environment_variable_sets_the_limit(monkeypatch):
    monkeypatch.setenv(limits.ENV_VAR, "100K")
    with pytest.raises(CaffeliteError, match=r"set by CAFFELITE_MEMORY_LIMIT"):
        _net(_ip(num_output=10000))
    limits.set_memory_limit("1G")  # the Python setting wins over the variable
    _net(_ip(num_output=10000))


def test_a_raised_limit_admits_more_than_is_available():
    beyond = limits.available_memory() * 2
    with pytest.raises(limits.SizeLimitError):
        limits.check_allocation((beyond,), 1)
    with limits.memory_limit(beyond * 2):
        assert limits.check_allocation((beyond,), 1) == beyond


def test_filler_values_are_checked_in_float64():
    """Fillers draw float64 before storing float32: twice the blob's bytes."""
    text = _ip(num_output=2**18).replace(
        "num_output", "weight_filler { type: 'xavier' } num_output"
    )
    with limits.memory_limit("5M"):  # the 3 MiB weights fit, their 6 MiB of draws do not
        with pytest.raises(
            CaffeliteError,
            match=r"layer 'ip' \(type InnerProduct\): the "
            r"float64 values of the xavier filler of shape \(262144, 3\)",
        ):
            _net(text)
    with limits.memory_limit("7M"):
        _net(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", 100), ("8G", 8 << 30), ("1.5k", 1536), ("512MiB", 512 << 20), (" 2 T ", 2 << 40)],
)
def test_parse_size(text, expected):
    assert limits.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1X"])
def test_parse_size_refuses_non_sizes(text):
    with pytest.raises(CaffeliteError, match="is not a size"):
        limits.parse_size(text)


def test_zero_limit_is_refused():
    with pytest.raises(CaffeliteError, match="must be positive"):
        limits.set_memory_limit(0)


def test_a_failed_reshape_leaves_the_blob_as_it_was():
    blob = caffelite.Blob(2, 3)
    blob.data[...] = 1
    with limits.memory_limit("1K"):
        with pytest.raises(limits.SizeLimitError):
            blob.reshape(1000, 1000)
    assert blob.shape == (2, 3)
    np.testing.assert_array_equal(blob.data, np.ones((2, 3)))


def test_a_zero_dimension_reaching_a_filler_is_named():
    """Found by tools/fuzz.py: an input with 0 channels gave a ZeroDivisionError."""
    text = """
    layer { name: "data" type: "Input" top: "data"
            input_param { shape { dim: 2 dim: 0 dim: 8 dim: 8 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
    """
    with pytest.raises(CaffeliteError, match=r"shape \(2, 0, 3, 3\) \(it is empty"):
        _net(text)
