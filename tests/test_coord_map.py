"""caffelite.coord_map: coordinate maps through spatial layers, and crop() that aligns
one top to another (checked on real nets, not only on the formulas)."""

import numpy as np
import pytest

import caffelite as caffe
from caffelite import layers as L
from caffelite import params as P
from caffelite.coord_map import coord_map_from_to, crop
from caffelite.errors import CaffeliteError


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=1, kernel_size=dks, stride=dstride, pad=dpad)
    return n


def center_in_input(kernel, stride, pad, out):
    """Where output pixel ``out`` of a conv window centres in its input."""
    return out * stride - pad + (kernel - 1) / 2


@pytest.mark.parametrize(("ks", "stride", "pad"), [(3, 1, 0), (5, 2, 1), (4, 3, 2)])
def test_conv_map_locates_each_output_on_its_window_centre(ks, stride, pad):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 30, 30]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=ks, stride=stride, pad=pad)
    axis, a, b = coord_map_from_to(n.data, n.conv)  # input coordinates -> output ones
    assert axis == 1
    for out in range(5):
        x = center_in_input(ks, stride, pad, out)
        np.testing.assert_allclose(a * x + b, out)


def test_conv_pool_deconv_identity_and_shift():
    n = conv_pool_deconv()
    axis, a, b = coord_map_from_to(n.deconv, n.data)
    assert (axis, a.tolist(), b.tolist()) == (1, [1.0], [0.0])
    n = conv_pool_deconv(pool=4, dstride=4)
    axis, a, b = coord_map_from_to(n.deconv, n.data)
    assert (axis, a.tolist(), b.tolist()) == (1, [1.0], [-1.0])


def test_padding_shifts_conv_one_way_and_deconv_the_other():
    plain = conv_pool_deconv()
    base = coord_map_from_to(plain.deconv, plain.data)
    for pad in (1, 3):
        conv_padded = conv_pool_deconv(pad=pad)
        deconv_padded = conv_pool_deconv(dpad=pad)
        both = conv_pool_deconv(pad=pad, dpad=pad)
        assert coord_map_from_to(conv_padded.deconv, conv_padded.data)[2] == base[2] - pad
        assert coord_map_from_to(deconv_padded.deconv, deconv_padded.data)[2] == base[2] + pad
        assert coord_map_from_to(both.deconv, both.data)[2] == base[2]


def test_pointwise_layers_and_1x1_conv_map_identically():
    n = conv_pool_deconv()
    reference = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.score = L.Convolution(n.relu, num_output=1, kernel_size=1)
    for top in (n.relu, n.score):
        assert [np.ravel(v).tolist() for v in coord_map_from_to(top, n.data)[1:]] == [
            np.ravel(v).tolist() for v in reference[1:]
        ]


def test_anisotropic_params_map_per_axis():
    n = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    _, a, b = coord_map_from_to(n.deconv, n.data)
    for axis, (ks, stride, pad) in enumerate([(3, 1, 0), (5, 2, 10)]):
        iso = conv_pool_deconv(ks=ks, stride=stride, pad=pad)
        _, a_iso, b_iso = coord_map_from_to(iso.deconv, iso.data)
        assert (a[axis], b[axis]) == (a_iso[0], b_iso[0])


def test_crop_aligns_an_upsampled_map_with_its_input():
    """FCN's pattern: a padded conv, 2x pool and 2x deconv, cropped back to the data.
    With an identity-like net the crop must return the data itself, pixel for pixel."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 12, 12]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=5, bias_term=False)
    n.up = L.Deconvolution(n.conv, num_output=1, kernel_size=1, bias_term=False)
    n.crop = crop(n.up, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and layer.crop_param.axis == 2
    assert list(layer.crop_param.offset) == [4]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 1, 1] = 1  # the conv copies its input, shifted by the padding
    net.params["conv"][0].data[...] = kernel
    net.params["up"][0].data[...] = 1
    data = np.random.default_rng(0).random((1, 1, 12, 12)).astype(np.float32)
    out = net.forward(data=data)["crop"]
    np.testing.assert_array_equal(out, data)


def test_crop_of_a_crop_adds_the_offset():
    n = conv_pool_deconv()
    _, _, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=3)
    _, _, b_crop = coord_map_from_to(n.crop, n.data)
    assert b_crop == b + 3


def test_errors_have_pycaffes_types_and_say_why():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="connected by spatial layers"):
        coord_map_from_to(n.ip, n.data)
    with pytest.raises(AssertionError, match="scale mismatch"):
        mismatched = conv_pool_deconv(pool=3, dstride=2)
        crop(mismatched.deconv, mismatched.data)
    bigger = conv_pool_deconv(dpad=10)
    with pytest.raises(AssertionError, match="negative offset") as raised:
        crop(bigger.deconv, bigger.data)
    assert isinstance(raised.value, CaffeliteError)
    legacy = caffe.NetSpec()
    legacy.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    legacy.conv = L.Convolution(legacy.data, num_output=1, kernel_h=3, kernel_w=3)
    with pytest.raises(CaffeliteError, match="legacy kernel_h, kernel_w"):
        coord_map_from_to(legacy.conv, legacy.data)
