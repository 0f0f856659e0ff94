"""Each export handler against ONNX Runtime: one-layer nets, random weights, two batch sizes
from one file, shapes picked where Caffe and ONNX defaults differ (ceil pooling, clipped
windows, padded averaging divisors)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_cases import assert_matches_runtime, net_from_snippet, randomize  # noqa: E402

from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.onnx import export  # noqa: E402

X = {"x": (2, 4, 9, 9)}


def one(type_: str, params: str = "", bottoms=("x",), tops=("y",)) -> str:
    b = " ".join(f'bottom: "{n}"' for n in bottoms)
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'layer {{ name: "l" type: "{type_}" {b} {t} {params} }}'


def pool(params: str) -> str:
    return one("Pooling", f"pooling_param {{ {params} }}")


CASES = {
    # ---- convolutions
    "conv": (
        one("Convolution", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 }"),
        X,
    ),
    "conv_group_dilation": (
        one(
            "Convolution",
            "convolution_param { num_output: 6 kernel_size: "
            "3 dilation: 2 group: 2 bias_term: false }",
        ),
        X,
    ),
    "conv_rect": (
        one(
            "Convolution",
            "convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 "
            "pad_h: 2 pad_w: 0 stride_h: 1 stride_w: 3 }",
        ),
        X,
    ),
    "deconv": (
        one(
            "Deconvolution",
            "convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 }",
        ),
        X,
    ),
    # ---- pooling where Caffe's rules bite
    "max_ceil_pad": (pool("pool: MAX kernel_size: 3 stride: 2 pad: 1"), {"x": (2, 3, 10, 10)}),
    "max_ceil_overhang": (pool("pool: MAX kernel_size: 3 stride: 2"), {"x": (2, 3, 6, 6)}),
    "max_dropped_last_window": (
        pool("pool: MAX kernel_size: 2 stride: 2 pad: 1"),
        {"x": (2, 3, 5, 5)},
    ),
    "max_floor_crops": (
        pool("pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR"),
        {"x": (2, 3, 7, 7)},
    ),
    "ave_pad_divisor": (pool("pool: AVE kernel_size: 3 stride: 2 pad: 1"), {"x": (2, 3, 7, 7)}),
    "ave_overhang": (pool("pool: AVE kernel_size: 3 stride: 2"), {"x": (2, 3, 6, 6)}),
    "ave_big_pad": (pool("pool: AVE kernel_size: 3 stride: 3 pad: 2"), {"x": (2, 3, 8, 8)}),
    "ave_rect": (
        pool("pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0"),
        {"x": (2, 3, 8, 7)},
    ),
    "ave_plain": (pool("pool: AVE kernel_size: 2 stride: 2"), {"x": (2, 3, 8, 8)}),
    "global_max": (pool("pool: MAX global_pooling: true"), X),
    "global_ave": (pool("pool: AVE global_pooling: true"), X),
    # ---- inner products
    "ip": (one("InnerProduct", "inner_product_param { num_output: 5 }"), X),
    "ip_transpose": (
        one("InnerProduct", "inner_product_param { num_output: 5 transpose: true }"),
        X,
    ),
    "ip_axis2": (one("InnerProduct", "inner_product_param { num_output: 5 axis: 2 }"), X),
    "ip_axis2_no_bias": (
        one(
            "InnerProduct",
            "inner_product_param { num_output: 5 axis: 2 bias_term: false transpose: true }",
        ),
        X,
    ),
    # ---- neurons
    "relu": (one("ReLU"), X),
    "relu_in_place": (
        one("ReLU", bottoms=("x",), tops=("x",))
        + one("Sigmoid", tops=("y",)).replace('name: "l"', 'name: "s"'),
        X,
    ),
    "leaky_relu": (one("ReLU", "relu_param { negative_slope: 0.1 }"), X),
    "prelu": (one("PReLU"), X),
    "prelu_shared": (one("PReLU", "prelu_param { channel_shared: true }"), X),
    "elu": (one("ELU", "elu_param { alpha: 0.7 }"), X),
    "sigmoid": (one("Sigmoid"), X),
    "tanh": (one("TanH"), X),
    "absval": (one("AbsVal"), X),
    "bnll": (one("BNLL"), X),
    "power": (one("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"), X),
    "power_sqrt": (one("Power", "power_param { power: 0.5 scale: 0.1 shift: 5 }"), X),
    "exp": (one("Exp"), X),
    "exp_base": (one("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }"), X),
    "log": (one("Log", "log_param { base: 10 scale: 0.1 shift: 5 }"), X),
    "clip": (one("Clip", "clip_param { min: -0.5 max: 0.7 }"), X),
    "swish": (one("Swish", "swish_param { beta: 1.5 }"), X),
    "threshold": (one("Threshold", "threshold_param { threshold: 0.3 }"), X),
    "dropout": (one("Dropout", "dropout_param { dropout_ratio: 0.3 }"), X),
    "dropout_scaled_at_test": (
        one("Dropout", "dropout_param { dropout_ratio: 0.3 scale_train: false }"),
        X,
    ),
    # ---- normalization
    "lrn_across": (one("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"), X),
    "lrn_within": (
        one("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
        X,
    ),
    "batch_norm": (one("BatchNorm", "batch_norm_param { eps: 0.001 }"), X),
    "batch_norm_2d": (one("BatchNorm"), {"x": (2, 5)}),
    "scale": (one("Scale", "scale_param { bias_term: true }"), X),
    "scale_axes": (one("Scale", "scale_param { axis: 1 num_axes: 2 }"), X),
    "scale_bottom": (
        one("Scale", "scale_param { axis: 0 }", bottoms=("x", "s")),
        {"x": (2, 4, 3, 3), "s": (2, 4)},
    ),
    "bias": (one("Bias"), X),
    "bias_bottom": (
        one("Bias", "bias_param { axis: 0 }", bottoms=("x", "b")),
        {"x": (2, 4, 3, 3), "b": (2, 4, 3)},
    ),
    "mvn": (one("MVN"), X),
    "mvn_mean_only": (one("MVN", "mvn_param { normalize_variance: false }"), X),
    "mvn_across": (one("MVN", "mvn_param { across_channels: true eps: 0.01 }"), X),
    # ---- tensors
    "softmax": (one("Softmax"), X),
    "softmax_axis2": (one("Softmax", "softmax_param { axis: 2 }"), X),
    "concat": (one("Concat", bottoms=("x", "z")), {"x": (2, 4, 3, 3), "z": (2, 2, 3, 3)}),
    "concat_axis2": (
        one("Concat", "concat_param { axis: 2 }", bottoms=("x", "z")),
        {"x": (2, 4, 3, 3), "z": (2, 4, 5, 3)},
    ),
    "slice": (
        one("Slice", "slice_param { slice_point: 1 slice_point: 3 }", tops=("a", "b", "c")),
        X,
    ),
    "slice_even": (one("Slice", "slice_param { axis: 2 }", tops=("a", "b", "c")), X),
    "eltwise_sum": (
        one("Eltwise", "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }", bottoms=("x", "z")),
        {"x": (2, 4, 3, 3), "z": (2, 4, 3, 3)},
    ),
    "eltwise_prod3": (
        one("Eltwise", "eltwise_param { operation: PROD }", bottoms=("x", "z", "w")),
        {"x": (2, 4, 3), "z": (2, 4, 3), "w": (2, 4, 3)},
    ),
    "eltwise_max": (
        one("Eltwise", "eltwise_param { operation: MAX }", bottoms=("x", "z")),
        {"x": (2, 4, 3, 3), "z": (2, 4, 3, 3)},
    ),
    "reshape": (one("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 9 } }"), X),
    "reshape_axis": (one("Reshape", "reshape_param { axis: 2 shape { dim: 81 } }"), X),
    "flatten": (one("Flatten"), X),
    "flatten_axes": (one("Flatten", "flatten_param { axis: 2 end_axis: 3 }"), X),
    "crop": (
        one("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }", bottoms=("x", "z")),
        {"x": (2, 4, 9, 9), "z": (2, 4, 5, 4)},
    ),
    "crop_channels": (
        one("Crop", "crop_param { axis: 1 offset: 1 }", bottoms=("x", "z")),
        {"x": (2, 4, 9, 9), "z": (2, 2, 5, 4)},
    ),
    "tile": (one("Tile", "tile_param { axis: 2 tiles: 3 }"), X),
    "argmax": (one("ArgMax"), X),
    "argmax_top3_values": (one("ArgMax", "argmax_param { top_k: 3 out_max_val: true }"), X),
    "argmax_axis": (one("ArgMax", "argmax_param { axis: 1 }"), X),
    "argmax_axis_values": (one("ArgMax", "argmax_param { axis: 2 top_k: 2 out_max_val: true }"), X),
    "reduce_sum": (one("Reduction", "reduction_param { axis: 1 }"), X),
    "reduce_asum": (one("Reduction", "reduction_param { operation: ASUM axis: 2 coeff: 0.5 }"), X),
    "reduce_sumsq": (one("Reduction", "reduction_param { operation: SUMSQ axis: -1 }"), X),
    "reduce_mean": (one("Reduction", "reduction_param { operation: MEAN axis: 1 coeff: 3 }"), X),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_handler_matches_runtime(case):
    layers, inputs = CASES[case]
    net = net_from_snippet(layers, inputs)
    randomize(net, np.random.default_rng(0))
    model = export(net)
    assert_matches_runtime(net, model)


def test_embed_matches_runtime():
    layers = one("Embed", "embed_param { num_output: 5 input_dim: 7 }")
    net = net_from_snippet(layers, {"x": (2, 3)})
    randomize(net, np.random.default_rng(0))
    assert_matches_runtime(net, export(net), integers=7)


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets(opset):
    """The reductions spell their axes per opset (attribute before 18, input from 18)."""
    layers = one("MVN") + one(
        "Reduction", "reduction_param { operation: MEAN axis: 1 }", bottoms=("x",), tops=("r",)
    ).replace('name: "l"', 'name: "r"')
    net = net_from_snippet(layers, X)
    model = export(net, opset=opset)
    assert model.opset_import[0].version == opset
    assert_matches_runtime(net, model)


def test_batch_axis_is_symbolic():
    net = net_from_snippet(one("ReLU"), X)
    model = export(net)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [4, 9, 9]
    fixed = export(net, dynamic_batch=False)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_unmapped_layer_names_the_layer():
    net = net_from_snippet('layer { name: "quiet" type: "Silence" bottom: "x" }', X)
    with pytest.raises(CaffeliteError, match=r"layer 'quiet' \(type Silence\) has no ONNX"):
        export(net)


def test_batch_statistics_refused():
    net = net_from_snippet(one("BatchNorm", "batch_norm_param { use_global_stats: false }"), X)
    with pytest.raises(CaffeliteError, match="layer 'l' \\(type BatchNorm\\).*batch's own"):
        export(net)


def test_train_net_refused(tmp_path):
    from caffelite.onnx.export import exportable_types

    assert "Convolution" in exportable_types()
    net = net_from_snippet("", {})
    with pytest.raises(CaffeliteError, match="no Input layer"):
        export(net)


def test_file_written_atomically(tmp_path):
    import onnx

    net = net_from_snippet(one("ReLU"), X)
    path = tmp_path / "sub" / "m.onnx"
    export(net, path)
    onnx.checker.check_model(str(path), full_check=True)
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]
