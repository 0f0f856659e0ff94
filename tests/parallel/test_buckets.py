"""Gradient buckets: the order backward finishes parameters, the sizes, shared
parameters, and the pack / unpack round trip."""

from __future__ import annotations

import numpy as np
from conftest import REPO

import caffelite as caffe
from caffelite.parallel.buckets import plan_buckets, readiness
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text


def lenet():
    return caffe.Net(str(REPO / "models/lenet/lenet.prototxt"), caffe.TRAIN)


def names(net, bucket):
    by_id = {
        id(blob): f"{name}/{j}"
        for name, blobs in net.params.items()
        for j, blob in enumerate(blobs)
    }
    return [by_id[id(blob)] for blob in bucket.params]


def test_lenet_buckets_follow_backward_and_close_past_the_cap():
    net = lenet()
    buckets = plan_buckets(net)
    # ip2 and ip1 (1.6 MB) fill the 1 MiB first bucket; the convolutions share the next.
    assert [names(net, b) for b in buckets] == [
        ["ip2/1", "ip2/0", "ip1/1", "ip1/0"],
        ["conv2/1", "conv2/0", "conv1/1", "conv1/0"],
    ]
    layer_names = list(net._layer_names)
    assert [layer_names[b.ready_layer] for b in buckets] == ["ip1", "conv1"]
    assert sum(b.nbytes for b in buckets) == 4 * sum(blob.count for blob in net.learnable_params)
    small = plan_buckets(net, first_cap_bytes=1, cap_bytes=1)
    assert len(small) == len(net.learnable_params)  # one per parameter when caps are tiny
    assert [b.ready_layer for b in small] == sorted((b.ready_layer for b in small), reverse=True)


def test_a_shared_parameter_is_ready_after_its_lowest_layer():
    param = parse_text(
        """
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
                param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
        layer { name: "b" type: "InnerProduct" bottom: "a" top: "b"
                param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
        """,
        caffe_pb2.NetParameter(),
    )
    net = caffe.Net(param, caffe.TRAIN)
    assert readiness(net) == [1]  # layer "a", not "b"
    assert [b.ready_layer for b in plan_buckets(net)] == [1]


def test_pack_then_unpack_scales_every_diff():
    net = lenet()
    rng = np.random.default_rng(3)
    for blob in net.learnable_params:
        blob.diff[...] = rng.standard_normal(blob.shape)
    before = [blob.diff.copy() for blob in net.learnable_params]
    for bucket in plan_buckets(net):
        flat = bucket.pack()
        flat *= 2  # what an all-reduce over two identical ranks returns
        bucket.unpack(0.5)
    for blob, old in zip(net.learnable_params, before, strict=True):
        np.testing.assert_array_equal(blob.diff, old)


def test_in_gpu_mode_a_bucket_is_packed_on_the_device_and_staged_in_one_copy_each_way():
    from caffelite import backend, fake_device

    with backend.gpu_mode_on(fake_device):
        net = lenet()
        rng = np.random.default_rng(4)
        for blob in net.learnable_params:
            blob.mutable_cpu_diff()[...] = rng.standard_normal(blob.shape)
        before = [blob.cpu_diff().copy() for blob in net.learnable_params]
        buckets = plan_buckets(net)
        for blob in net.learnable_params:
            blob.gpu_diff()  # the diffs are on the device, as after backward
        fake_device.reset_transfers()
        for bucket in buckets:
            assert isinstance(bucket.pack(), fake_device.ndarray)
            host = bucket.pack_to_host()
            assert isinstance(host, np.ndarray)
            host *= 2  # what an all-reduce over two identical ranks returns
            bucket.unpack(0.5)
        assert fake_device.transfers == {"h2d": len(buckets), "d2h": len(buckets)}
        for blob, old in zip(net.learnable_params, before, strict=True):
            np.testing.assert_array_equal(blob.cpu_diff(), old)
