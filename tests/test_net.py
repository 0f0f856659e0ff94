"""Net wiring: filtering, splits, in-place, sharing, loss weights, backward needs, I/O."""

import numpy as np
import pytest
from conftest import REPO

import caffelite as caffe
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text


def make_net(text, phase=caffe.TRAIN, **kwargs):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase, **kwargs)


MLP = """
name: "mlp"
input: "x" input_shape { dim: 4 dim: 3 }
input: "y" input_shape { dim: 4 dim: 2 }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


def test_inputs_outputs_and_in_place():
    net = make_net(MLP)
    assert net.inputs == ["x", "y"]
    assert net.outputs == ["loss"]
    assert list(net.blobs) == ["x", "y", "h", "out", "loss"]
    assert net._layer_names == ["input", "ip1", "relu", "ip2", "loss"]
    assert net.top_names["relu"] == ["h"] and net.bottom_names["relu"] == ["h"]
    assert [layer.type for layer in net.layers] == [
        "Input",
        "InnerProduct",
        "ReLU",
        "InnerProduct",
        "EuclideanLoss",
    ]
    assert list(net.params) == ["ip1", "ip2"]
    assert [b.shape for b in net.params["ip1"]] == [(5, 3), (5,)]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["out"] == 0.0


def test_forward_matches_numpy_and_returns_outputs():
    net = make_net(MLP)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    out = net.forward(x=x, y=y)
    w1, b1 = (b.data for b in net.params["ip1"])
    w2, b2 = (b.data for b in net.params["ip2"])
    prediction = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    expected = ((prediction - y) ** 2).sum() / 2 / 4
    assert set(out) == {"loss"}
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-5)


def test_backward_matches_finite_differences_through_the_net():
    net = make_net(MLP + "force_backward: true")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    net.forward(x=x, y=y)
    net.clear_param_diffs()
    diffs = net.backward()
    analytic = diffs["x"].copy()
    eps = 1e-2
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            shifted = x.copy()
            shifted[i] += sign * eps
            numeric[i] += sign * float(net.forward(x=shifted, y=y)["loss"]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-3)


def test_split_is_inserted_and_gradients_are_summed():
    net = make_net("""
    input: "x" input_shape { dim: 2 dim: 3 }
    force_backward: true
    layer { name: "a" type: "Python" bottom: "x" top: "a"
            python_param { module: "pylayers" layer: "ScaleByParam" param_str: "2" } }
    layer { name: "b" type: "Python" bottom: "x" top: "b"
            python_param { module: "pylayers" layer: "ScaleByParam" param_str: "3" } }
    """)
    assert "x_input_0_split" in net._layer_names
    assert net.bottom_names["a"] == ["x_input_0_split_0"]
    assert net.bottom_names["b"] == ["x_input_0_split_1"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.forward(x=x)
    np.testing.assert_array_equal(out["a"], 2 * x)
    np.testing.assert_array_equal(out["b"], 3 * x)
    grads = net.backward(a=np.ones((2, 3)), b=np.ones((2, 3)))
    np.testing.assert_array_equal(grads["x"], np.full((2, 3), 5.0))


def test_split_of_a_loss_top_counts_the_loss_once():
    net = make_net(
        MLP
        + """
    layer { name: "double" type: "Python" bottom: "loss" top: "loss2"
            python_param { module: "pylayers" layer: "ScaleByParam" param_str: "2" } }
    """
    )
    assert "loss_loss_0_split" in net._layer_names
    net.blobs["x"].data[...] = 1.0
    net.blobs["y"].data[...] = 1.0  # nonzero, so the loss is nonzero even if ReLU kills all of h
    loss = net.forward_from_to()
    assert float(net.blobs["loss"].data) > 0
    assert loss == pytest.approx(float(net.blobs["loss"].data), rel=1e-6)


PHASES = """
input: "x" input_shape { dim: 1 dim: 1 }
layer { name: "train_only" type: "Python" bottom: "x" top: "t" include { phase: TRAIN }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
layer { name: "test_only" type: "Python" bottom: "x" top: "u" include { phase: TEST }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
layer { name: "deep" type: "Python" bottom: "x" top: "v" include { min_level: 2 }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
layer { name: "staged" type: "Python" bottom: "x" top: "w" include { stage: "deploy" }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
layer { name: "not_deploy" type: "Python" bottom: "x" top: "z" exclude { stage: "deploy" }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
layer { name: "upto1" type: "Python" bottom: "x" top: "q" include { max_level: 1 not_stage: "x" }
        python_param { module: "pylayers" layer: "ScaleByParam" } }
"""


@pytest.mark.parametrize(
    ("phase", "level", "stages", "expected"),
    [
        (caffe.TRAIN, 0, None, ["train_only", "not_deploy", "upto1"]),
        (caffe.TEST, 0, None, ["test_only", "not_deploy", "upto1"]),
        (caffe.TEST, 2, None, ["test_only", "deep", "not_deploy"]),
        (caffe.TRAIN, 0, ["deploy"], ["train_only", "staged", "upto1"]),
        (caffe.TRAIN, 1, ["x"], ["train_only", "not_deploy"]),
    ],
)
def test_phase_level_and_stage_rules(phase, level, stages, expected):
    net = make_net(PHASES, phase, level=level, stages=stages)
    kept = [name for name in net._layer_names if name != "input" and "split" not in name]
    assert kept == expected


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(CaffeliteError, match="both include and exclude"):
        make_net("""input: "x" input_shape { dim: 1 }
        layer { name: "bad" type: "Python" bottom: "x" top: "y"
                include { phase: TRAIN } exclude { phase: TEST }
                python_param { module: "pylayers" layer: "ScaleByParam" } }""")


SHARED = """
input: "x" input_shape { dim: 2 dim: 3 }
input: "t" input_shape { dim: 2 dim: 4 }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
        param { name: "w" lr_mult: 1 } param { name: "b" lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "b"
        param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "t" top: "loss" }
"""


def _shared_net():
    # The Eltwise layer may not exist in every build; a Python sum keeps the test focused.
    text = SHARED.replace(
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }',
        'layer { name: "sum" type: "Python" bottom: "a" bottom: "b" top: "s" '
        'python_param { module: "pylayers" layer: "Sum" } }',
    )
    return make_net(text)


def test_named_params_are_shared_and_gradients_accumulate():
    net = _shared_net()
    a, b = net.params["a"], net.params["b"]
    assert a[0] is b[0] and a[1] is b[1]
    assert len(net.learnable_params) == 2
    assert net.params_lr == [1.0, 2.0] and net.params_weight_decay == [1.0, 0.0]
    assert net.param_owners == [-1, -1, 0, 1]
    x = np.random.default_rng(2).standard_normal((2, 3))
    net.forward(x=x, t=np.zeros((2, 4)))
    net.clear_param_diffs()
    net.backward()
    top_diff = net.blobs["s"].diff
    np.testing.assert_allclose(a[0].diff, 2 * top_diff.T @ x, rtol=1e-5)


def test_mismatched_shared_shapes_name_both():
    bad = """input: "x" input_shape { dim: 2 dim: 3 }
    layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" }
            inner_product_param { num_output: 4 } }
    layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" }
            inner_product_param { num_output: 5 } }"""
    with pytest.raises(CaffeliteError, match=r"shared parameter 'w'.*\(5, 3\).*\(4, 3\)"):
        make_net(bad)


def test_lr_mult_zero_and_backward_pruning():
    net = make_net("""
    input: "x" input_shape { dim: 2 dim: 3 }
    input: "y" input_shape { dim: 2 dim: 2 }
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "h"
            param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 2 } }
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "out"
            inner_product_param { num_output: 2 } }
    layer { name: "side" type: "InnerProduct" bottom: "x" top: "unused"
            inner_product_param { num_output: 2 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
    """)
    need = dict(zip(net._layer_names, net.layer_need_backward, strict=True))
    assert need["frozen"] is False  # no learnable params, input needs no gradient
    assert need["ip"] is True
    assert need["side"] is False  # does not feed the loss
    frozen = net.layer_dict["frozen"]
    assert frozen.param_propagate_down == [False, False]
    ip_bottom_need = net.bottom_need_backward[net._layer_names.index("ip")]
    assert ip_bottom_need == [False]


def test_force_backward_and_propagate_down():
    text = MLP.replace(
        'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y"',
        'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" '
        "propagate_down: true propagate_down: false",
    )
    net = make_net(text + "force_backward: true")
    assert net.bottom_need_backward[net._layer_names.index("ip1")] == [True]
    assert net.bottom_need_backward[net._layer_names.index("loss")] == [True, True]
    plain = make_net(text)
    assert plain.bottom_need_backward[plain._layer_names.index("ip1")] == [False]
    assert plain.bottom_need_backward[plain._layer_names.index("loss")] == [True, False]


def test_loss_weight_scales_loss_and_gradient():
    weighted = MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 3 }')
    base, heavy = make_net(MLP), make_net(weighted)
    for source, target in zip(base.learnable_params, heavy.learnable_params, strict=True):
        target.data[...] = source.data
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    for net in (base, heavy):
        net.forward(x=x, y=y)
        net.clear_param_diffs()
    loss_base = base.forward_backward()
    loss_heavy = heavy.forward_backward()
    assert loss_heavy == pytest.approx(3 * loss_base, rel=1e-6)
    np.testing.assert_allclose(
        heavy.params["ip1"][0].diff, 3 * base.params["ip1"][0].diff, rtol=1e-5
    )


def test_save_and_copy_from_round_trip(tmp_path):
    net = make_net(MLP)
    path = tmp_path / "mlp.caffemodel"
    net.save(path)
    other = make_net(MLP)
    other.copy_from(str(path))
    for a, b in zip(net.learnable_params, other.learnable_params, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    loaded = caffe_pb2.NetParameter()
    loaded.ParseFromString(path.read_bytes())
    assert [layer.name for layer in loaded.layer] == net._layer_names
    assert list(loaded.layer[1].blobs[0].shape.dim) == [5, 3]


def test_weights_argument_and_legacy_signature(tmp_path):
    source = make_net(MLP)
    path = tmp_path / "w.caffemodel"
    source.save(path)
    prototxt = tmp_path / "mlp.prototxt"
    prototxt.write_text(MLP)
    for net in (
        caffe.Net(str(prototxt), caffe.TEST, weights=str(path)),
        caffe.Net(str(prototxt), str(path), caffe.TEST),
    ):
        np.testing.assert_array_equal(net.params["ip2"][0].data, source.params["ip2"][0].data)


def test_copy_from_legacy_4d_blob_shape(tmp_path):
    net = make_net(MLP)
    param = net.to_proto()
    blob = param.layer[1].blobs[0]
    values = list(blob.data)
    blob.Clear()
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 5, 3
    blob.data.extend(values)
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(param.SerializeToString())
    other = make_net(MLP)
    other.copy_from(str(path))
    np.testing.assert_array_equal(other.params["ip1"][0].data, net.params["ip1"][0].data)


def test_copy_from_shape_mismatch_names_layer_and_shapes(tmp_path):
    path = tmp_path / "w.caffemodel"
    make_net(MLP).save(path)
    wider = MLP.replace("num_output: 5", "num_output: 6")
    with pytest.raises(CaffeliteError, match=r"layer 'ip1'.*\(5, 3\) in the file, \(6, 3\)"):
        make_net(wider).copy_from(str(path))


def test_corrupt_caffemodel_says_so(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(CaffeliteError, match="bad.caffemodel is corrupt"):
        make_net(MLP).copy_from(str(path))


def test_share_with_uses_the_same_memory():
    train, test = make_net(MLP), make_net(MLP, caffe.TEST)
    test.share_with(train)
    train.params["ip1"][0].data[...] = 7.0
    assert np.all(test.params["ip1"][0].data == 7.0)


def test_reshape_input_and_forward_again():
    net = make_net(MLP)
    net.blobs["x"].reshape(7, 3)
    net.blobs["y"].reshape(7, 2)
    net.reshape()
    assert net.blobs["out"].shape == (7, 2)
    net.forward()


def test_forward_start_end_by_layer_name():
    net = make_net(MLP)
    out = net.forward(end="ip1", x=np.ones((4, 3)), y=np.zeros((4, 2)))
    assert set(out) == {"h"}
    with pytest.raises(CaffeliteError, match="no layer named 'nope'"):
        net.forward(end="nope")


def test_input_shape_mismatch_names_blob_and_shapes():
    with pytest.raises(CaffeliteError, match=r"blob 'x' has shape \(4, 3\).*\(2, 3\)"):
        make_net(MLP).forward(x=np.ones((2, 3)))


def test_missing_bottom_names_layer_and_blob():
    with pytest.raises(CaffeliteError, match="layer 'ip1'.*needs bottom blob 'nope'"):
        make_net(
            'layer { name: "ip1" type: "InnerProduct" bottom: "nope" top: "y" '
            "inner_product_param { num_output: 1 } }"
        )


def test_unknown_layer_type_lists_known_types():
    with pytest.raises(CaffeliteError, match=r"unknown layer type 'Convolutoin'.*Convolution"):
        make_net(
            'input: "x" input_shape { dim: 1 } '
            'layer { name: "c" type: "Convolutoin" bottom: "x" top: "y" }'
        )


def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(CaffeliteError, match=r"bad.prototxt:4:\d+: .*no field named \"tpye\""):
        caffe.Net(str(path), caffe.TRAIN)


def test_bad_enum_value_is_named(tmp_path):
    path = tmp_path / "enum.prototxt"
    path.write_text('layer { name: "p" type: "Pooling" pooling_param { pool: MEDIAN } }\n')
    with pytest.raises(CaffeliteError, match=r"enum.prototxt:1:\d+: .*MEDIAN"):
        caffe.Net(str(path), caffe.TRAIN)


def test_duplicate_top_is_an_error():
    with pytest.raises(CaffeliteError, match="top blob 'y'.*more than one layer"):
        make_net(
            'input: "x" input_shape { dim: 1 dim: 1 }'
            'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }'
            'layer { name: "b" type: "ReLU" bottom: "x" top: "y" }'
        )


def test_python_layer_errors_and_user_exceptions():
    with pytest.raises(CaffeliteError, match="no class 'Missing'"):
        make_net(
            'input: "x" input_shape { dim: 1 } layer { name: "p" type: "Python" '
            'bottom: "x" top: "y" python_param { module: "pylayers" layer: "Missing" } }'
        )
    with pytest.raises(CaffeliteError, match="must subclass caffelite.Layer"):
        make_net(
            'input: "x" input_shape { dim: 1 } layer { name: "p" type: "Python" '
            'bottom: "x" top: "y" python_param { module: "pylayers" layer: "NotALayer" } }'
        )
    net = make_net(
        'input: "x" input_shape { dim: 1 } layer { name: "p" type: "Python" '
        'bottom: "x" top: "y" python_param { module: "pylayers" layer: "Exploding" } }'
    )
    assert net.layers[1].type == "Python"
    with pytest.raises(ZeroDivisionError, match="user layer failed"):
        net.forward()


def test_custom_layer_is_one_class_and_one_decorator():
    @caffe.register_layer("TimesTwoForTest")
    class TimesTwo(caffe.Layer):
        exact_num_bottom_blobs = 1

        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data

    assert "TimesTwoForTest" in caffe.layer_type_list()
    net = make_net(
        'input: "x" input_shape { dim: 2 } '
        'layer { name: "t" type: "TimesTwoForTest" bottom: "x" top: "y" }'
    )
    np.testing.assert_array_equal(net.forward(x=np.array([1.0, 2.0]))["y"], [2.0, 4.0])
    with pytest.raises(CaffeliteError, match="already registered"):
        caffe.register_layer("TimesTwoForTest")(TimesTwo)


def test_wrong_blob_count_is_reported():
    with pytest.raises(CaffeliteError, match=r"layer 'loss'.*exactly 2 bottom"):
        make_net(
            'input: "x" input_shape { dim: 2 dim: 2 } '
            'layer { name: "loss" type: "EuclideanLoss" bottom: "x" top: "l" }'
        )


def test_lenet_shapes_in_train_phase():
    net = caffe.Net(str(REPO / "models/lenet/lenet.prototxt"), caffe.TEST)
    shapes = {name: blob.shape for name, blob in net.blobs.items()}
    assert shapes == {
        "data": (64, 1, 28, 28),
        "conv1": (64, 20, 24, 24),
        "pool1": (64, 20, 12, 12),
        "conv2": (64, 50, 8, 8),
        "pool2": (64, 50, 4, 4),
        "ip1": (64, 500),
        "ip2": (64, 10),
        "prob": (64, 10),
    }
    assert [b.shape for b in net.params["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert [b.shape for b in net.params["ip1"]] == [(500, 800), (500,)]


def test_lenet_train_test_shapes_with_batch_64(tmp_path, monkeypatch):
    import numpy as np_

    from caffelite.mnist import write_lmdb

    rng = np_.random.default_rng(0)
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        write_lmdb(
            str(tmp_path / "data/mnist" / name),
            rng.integers(0, 256, (100, 28, 28), dtype=np_.uint8),
            rng.integers(0, 10, 100),
        )
    monkeypatch.chdir(tmp_path)
    net = caffe.Net(str(REPO / "models/lenet/lenet_train_test.prototxt"), caffe.TRAIN)
    expected = {
        "data": (64, 1, 28, 28),
        "label": (64,),
        "conv1": (64, 20, 24, 24),
        "pool1": (64, 20, 12, 12),
        "conv2": (64, 50, 8, 8),
        "pool2": (64, 50, 4, 4),
        "ip1": (64, 500),
        "ip2": (64, 10),
        "loss": (),
    }
    assert {name: blob.shape for name, blob in net.blobs.items()} == expected
    assert "accuracy" not in net.blobs
    test_net = caffe.Net(str(REPO / "models/lenet/lenet_train_test.prototxt"), caffe.TEST)
    assert test_net.blobs["data"].shape == (100, 1, 28, 28)
    assert test_net.outputs == ["accuracy", "loss"]
    loss = net.forward_backward()
    assert 1.0 < loss < 4.0  # about log(10) for untrained weights


def test_loss_top_feeding_another_loss_gets_both_gradients():
    chained = make_net(
        MLP
        + """
    layer { name: "double" type: "Python" bottom: "loss" top: "loss2" loss_weight: 1
            python_param { module: "pylayers" layer: "ScaleByParam" param_str: "2" } }
    """
    )
    base = make_net(MLP)
    for source, target in zip(base.learnable_params, chained.learnable_params, strict=True):
        target.data[...] = source.data
    for net in (base, chained):
        net.blobs["x"].data[...] = np.linspace(-1, 1, 12).reshape(4, 3)
        net.clear_param_diffs()
    loss_base = base.forward_backward()
    loss_chained = chained.forward_backward()
    assert loss_chained == pytest.approx(3 * loss_base, rel=1e-6)
    np.testing.assert_allclose(
        chained.params["ip2"][0].diff, 3 * base.params["ip2"][0].diff, rtol=1e-5
    )


def test_repeated_layer_names_are_allowed_as_in_caffe(tmp_path):
    """Caffe's own mnist_autoencoder.prototxt names two layers "loss"."""
    text = (
        MLP
        + """
    layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss_b"
            loss_weight: 0 }
    """
    )
    net = make_net(text)
    assert net._layer_names.count("loss") == 2
    assert net.outputs == ["loss", "loss_b"]
    path = tmp_path / "w.caffemodel"
    net.save(path)
    make_net(text).copy_from(str(path))


def test_a_layers_explicit_phase_wins_over_the_nets():
    """Caffe's Layer takes param.phase(): a Dropout marked TEST is the identity in TRAIN."""
    net = make_net("""
    input: "x" input_shape { dim: 1 dim: 64 }
    layer { name: "drop" type: "Dropout" bottom: "x" top: "y" phase: TEST }
    layer { name: "plain" type: "Dropout" bottom: "x" top: "z" }
    """)
    assert net.layer_dict["drop"].phase == caffe.TEST
    assert net.layer_dict["plain"].phase == caffe.TRAIN
    out = net.forward(x=np.ones((1, 64)))
    np.testing.assert_array_equal(out["y"], np.ones((1, 64)))
    assert (out["z"] == 0).any()


def test_outputs_come_in_name_order_as_in_caffe():
    net = make_net("""
    input: "x" input_shape { dim: 2 dim: 3 }
    layer { name: "s" type: "Softmax" bottom: "x" top: "z_prob" }
    layer { name: "copy" type: "Python" bottom: "x" top: "a_copy"
            python_param { module: "pylayers" layer: "ScaleByParam" } }
    """)
    assert net.outputs == ["a_copy", "z_prob"]


def test_forward_all_and_forward_backward_all_batch_and_unpad():
    no_loss = MLP.replace(
        'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }', ""
    )
    net = make_net(no_loss + "force_backward: true")  # no loss: gradients only when forced
    x = np.random.default_rng(3).standard_normal((10, 3))  # 3 batches of 4, the last padded
    outs = net.forward_all(x=x)
    assert outs["out"].shape == (10, 2)
    w1, b1 = (b.data for b in net.params["ip1"])
    w2, b2 = (b.data for b in net.params["ip2"])
    np.testing.assert_allclose(outs["out"], np.maximum(x @ w1.T + b1, 0) @ w2.T + b2, rtol=1e-5)
    upstream = np.ones((10, 2))
    outs, grads = net.forward_backward_all(x=x, out=upstream)
    assert set(grads) == {"x", "y"} and grads["x"].shape == (10, 3)
    mask = (x @ w1.T + b1) > 0
    np.testing.assert_allclose(grads["x"], ((upstream @ w2) * mask) @ w1, rtol=1e-5, atol=1e-6)
    with pytest.raises(CaffeliteError, match="nope: not an input"):
        net.forward_all(x=x, nope=x)


def test_set_input_arrays_feeds_a_memory_data_net():
    net = make_net("""
    layer { name: "mem" type: "MemoryData" top: "data" top: "label"
            memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 1 } }
    layer { name: "sink" type: "Silence" bottom: "label" }
    """)
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    net.set_input_arrays(data, np.array([0, 1, 2, 3]))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [0, 1])
    with pytest.raises(CaffeliteError, match="first layer is MemoryData"):
        make_net(MLP).set_input_arrays(data, np.zeros(4))


def test_latin1_comment_in_a_prototxt_is_fine(tmp_path):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes("# café\n".encode("latin-1") + MLP.encode())
    assert caffe.Net(str(path), caffe.TEST).inputs == ["x", "y"]


def test_weights_file_given_as_the_model_is_a_clear_error(tmp_path):
    path = tmp_path / "w.caffemodel"
    make_net(MLP).save(path)
    with pytest.raises(CaffeliteError, match=r"w.caffemodel is a binary file, not a NetParameter"):
        caffe.Net(str(path), caffe.TEST)


def test_legacy_caffemodel_with_input_names_but_no_shapes_loads(tmp_path):
    """Old Caffe wrote `input:` names without dims into caffemodels; UpgradeNetInput strips them."""
    source = make_net(MLP)
    param = source.to_proto()
    param.input.append("x")
    path = tmp_path / "old.caffemodel"
    path.write_bytes(param.SerializeToString())
    target = make_net(MLP)
    target.copy_from(str(path))
    np.testing.assert_array_equal(target.params["ip1"][0].data, source.params["ip1"][0].data)


def test_old_batch_norm_with_learnable_params_is_upgraded():
    net = make_net("""
    input: "x" input_shape { dim: 4 dim: 3 }
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y"
            param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }
    """)
    assert net.params_lr == [0.0, 0.0, 0.0] and net.params_weight_decay == [0.0, 0.0, 0.0]
