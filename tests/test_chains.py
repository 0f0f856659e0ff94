"""In-place BatchNorm -> Scale -> ReLU chains (caffelite.chains): the same values to the bit
as the layers run one at a time, and the layers themselves where a chain may not run."""

import numpy as np
import pytest

from caffelite import chains
from caffelite.layer import TEST, TRAIN
from caffelite.net import Net
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text
from caffelite.rng import set_random_seed


def chain_net(scale="bias_term: true", relu="relu_param { negative_slope: 0.1 }"):
    """Convolution, then BatchNorm (global statistics), Scale and ReLU in place, twice."""
    stage = (
        'layer { name: "convI" type: "Convolution" bottom: "BOTTOM" top: "cI"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 pad: 1\n"
        '    weight_filler { type: "gaussian" std: 0.5 } } }\n'
        'layer { name: "bnI" type: "BatchNorm" bottom: "cI" top: "cI"\n'
        "  batch_norm_param { use_global_stats: true } }\n"
        'layer { name: "scaleI" type: "Scale" bottom: "cI" top: "cI"\n'
        f'  scale_param {{ {scale} filler {{ type: "gaussian" std: 1 }}\n'
        '    bias_filler { type: "gaussian" std: 1 } } }\n'
    )
    if relu is not None:
        stage += f'layer {{ name: "reluI" type: "ReLU" bottom: "cI" top: "cI" {relu} }}\n'
    return (
        "force_backward: true\n"
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }\n"
        + stage.replace("I", "1").replace("BOTTOM", "data")
        + stage.replace("I", "2").replace("BOTTOM", "c1")
    )


def make_net(text, phase=TRAIN, chaining=True):
    """The net with the same weights (fillers seeded) and statistics every time."""
    set_random_seed(3)
    net = Net(parse_text(text, caffe_pb2.NetParameter()), phase)
    net.chaining = chaining
    rng = np.random.default_rng(0)
    for name, layer in net.layer_dict.items():
        if layer.type == "BatchNorm":
            mean, var, factor = net.params[name]
            factor.data[...] = 2.0
            mean.data[...] = rng.standard_normal(mean.shape)
            var.data[...] = rng.random(var.shape) + 0.5
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    return net


def run(net, **backward):
    net.forward()
    top = net.blobs[net.outputs[0]]
    top.diff[...] = np.random.default_rng(1).standard_normal(top.shape)
    net.backward(**backward)
    return (
        {name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()},
        {name: [p.diff.copy() for p in params] for name, params in net.params.items()},
    )


def assert_same(ours, theirs):
    for name, (data, diff) in theirs[0].items():
        np.testing.assert_array_equal(ours[0][name][0], data, err_msg=f"{name} data")
        np.testing.assert_array_equal(ours[0][name][1], diff, err_msg=f"{name} diff")
    for name, diffs in theirs[1].items():
        for i, diff in enumerate(diffs):
            np.testing.assert_array_equal(ours[1][name][i], diff, err_msg=f"{name} param {i}")


VARIANTS = {
    "leaky": {},
    "relu": {"relu": ""},
    "no_relu": {"relu": None},
    "no_bias": {"scale": "bias_term: false"},
}


@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["train", "test"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chained_pass_equals_the_layers_to_the_bit(variant, phase):
    text = chain_net(**VARIANTS[variant])
    chained = make_net(text, phase)
    assert sorted(chained._chains()) == [2, 6 if variant != "no_relu" else 5]
    expected = run(make_net(text, phase, chaining=False))
    assert_same(run(chained), expected)


def test_chains_run_and_the_layers_do_not(monkeypatch):
    """The chained pass really replaces the layers (a test that could not tell would pass
    with chains never used)."""
    net = make_net(chain_net())
    for kind in ("BatchNorm", "Scale", "ReLU"):
        for layer in net.layers:
            if layer.type == kind:
                monkeypatch.setattr(layer, "forward", _refuse)
                monkeypatch.setattr(layer, "backward", _refuse)
    run(net)


def _refuse(*args):
    raise AssertionError("a chained layer ran by itself")


def test_a_partial_pass_runs_the_layers(monkeypatch):
    text = chain_net()
    expected = run(make_net(text, chaining=False))
    net = make_net(text)
    monkeypatch.setattr(chains.Chain, "forward", _refuse)
    monkeypatch.setattr(chains.Chain, "backward", _refuse)
    net.forward(start="conv1")  # names a layer: partial in pycaffe's sense
    top = net.blobs[net.outputs[0]]
    top.diff[...] = np.random.default_rng(1).standard_normal(top.shape)
    net.backward(end="conv1")
    assert_same(
        (
            {name: (b.data.copy(), b.diff.copy()) for name, b in net.blobs.items()},
            {name: [p.diff.copy() for p in ps] for name, ps in net.params.items()},
        ),
        expected,
    )


@pytest.mark.parametrize("setting", ["hooks", "debug_info"])
def test_hooks_and_debug_info_see_every_layer(setting, monkeypatch):
    net = make_net(chain_net())
    seen = []
    if setting == "hooks":
        net.after_forward(seen.append)
        net.after_backward(seen.append)
    else:
        net.debug_info = True
    monkeypatch.setattr(chains.Chain, "forward", _refuse)
    monkeypatch.setattr(chains.Chain, "backward", _refuse)
    run(net)
    if setting == "hooks":
        assert seen == list(range(len(net.layers))) + list(range(len(net.layers)))[::-1]


def test_chain_layers_left_as_their_own_forward_leaves_them():
    """After a chained forward each layer may run its own backward (a partial backward)."""
    text = chain_net()
    expected = run(make_net(text, chaining=False), end="conv1")
    net = make_net(text)
    net.forward()  # chained
    top = net.blobs[net.outputs[0]]
    top.diff[...] = np.random.default_rng(1).standard_normal(top.shape)
    net.backward(end="conv1")  # partial: the layers one at a time
    for name, diffs in expected[1].items():
        for i, diff in enumerate(diffs):
            np.testing.assert_array_equal(net.params[name][i].diff, diff, err_msg=name)


def test_where_the_gradient_stops_at_the_chain_the_layers_run():
    """No force_backward and BatchNorm straight on the input: nothing flows below the
    chain, but Scale's parameters still learn."""
    text = (
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"\n'
        "  batch_norm_param { use_global_stats: true } }\n"
        'layer { name: "scale" type: "Scale" bottom: "data" top: "data"\n'
        '  scale_param { bias_term: true filler { type: "gaussian" std: 1 } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 1\n'
        '  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }\n'
    )
    chained, plain = make_net(text), make_net(text, chaining=False)
    assert list(chained._chains()) == [1]
    assert not chained.bottom_need_backward[1][0]
    assert_same(run(chained), run(plain))
    assert np.any(chained.params["scale"][0].diff != 0)


@pytest.mark.parametrize(
    ("change", "chained"),
    [
        (("use_global_stats: true", "use_global_stats: false"), 6),  # batch statistics
        (('top: "c1"\n  batch_norm_param', 'top: "b1"\n  batch_norm_param'), 6),  # a copy
        # a loss on the chain's last top (a loss on a blob that is read on goes to a Split)
        (('name: "relu2" type: "ReLU"', 'name: "relu2" type: "ReLU" loss_weight: 1'), 2),
    ],
    ids=["batch_statistics", "not_in_place", "loss_on_a_layer"],
)
def test_what_does_not_chain(change, chained):
    text = chain_net().replace(*change, 1)
    assert text != chain_net()
    if "b1" in change[1]:  # the layers after an out-of-place BatchNorm read its top
        for kind in ('"scale1" type: "Scale"', '"relu1" type: "ReLU"'):
            text = text.replace(f'{kind} bottom: "c1" top: "c1"', f'{kind} bottom: "b1" top: "b1"')
        text = text.replace(
            '"conv2" type: "Convolution" bottom: "c1"', '"conv2" type: "Convolution" bottom: "b1"'
        )
    net = make_net(text)
    assert list(net._chains()) == [chained]  # the other stage still chains
    assert_same(run(net), run(make_net(text, chaining=False)))


def test_an_out_of_place_relu_stays_out_of_the_chain():
    text = chain_net().replace(
        '"relu1" type: "ReLU" bottom: "c1" top: "c1"', '"relu1" type: "ReLU" bottom: "c1" top: "r1"'
    )
    text = text.replace(
        '"conv2" type: "Convolution" bottom: "c1"', '"conv2" type: "Convolution" bottom: "r1"'
    )
    net = make_net(text)
    assert net._chains()[2].relu is None and net._chains()[2].last == 3
    assert_same(run(net), run(make_net(text, chaining=False)))


def test_chains_in_gpu_mode_run_on_the_device():
    """The fake device refuses host arrays in its kernels: the chain must hand it the
    blobs' device arrays, and still equal the layers."""
    from caffelite import backend, fake_device

    with backend.gpu_mode_on(fake_device):
        text = chain_net()
        chained = make_net(text)
        assert chained._chains()
        assert_same(run(chained), run(make_net(text, chaining=False)))
