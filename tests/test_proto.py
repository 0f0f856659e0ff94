"""The Caffe schema: generated code is current, numbers match Caffe, text parses."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from google.protobuf import descriptor, text_format

from caffelite.proto import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
GEN_PROTO = REPO_ROOT / "tools" / "gen_proto.py"


def _load_gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", GEN_PROTO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_module_is_current():
    pytest.importorskip("grpc_tools")
    gen_proto = _load_gen_proto()
    reason = gen_proto.stale_reason()
    assert reason is None, f"{reason}; run `python tools/gen_proto.py`"


def _field(message: type, name: str) -> descriptor.FieldDescriptor:
    return message.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (caffe_pb2.LayerParameter, "convolution_param", 106),
        (caffe_pb2.LayerParameter, "pooling_param", 121),
        (caffe_pb2.LayerParameter, "inner_product_param", 117),
        (caffe_pb2.LayerParameter, "batch_norm_param", 139),
        (caffe_pb2.LayerParameter, "recurrent_param", 146),
        (caffe_pb2.LayerParameter, "swish_param", 147),
        (caffe_pb2.LayerParameter, "clip_param", 148),
        (caffe_pb2.LayerParameter, "transform_param", 100),
        (caffe_pb2.NetParameter, "layer", 100),
        (caffe_pb2.NetParameter, "layers", 2),
        (caffe_pb2.SolverParameter, "base_lr", 5),
        (caffe_pb2.SolverParameter, "type", 40),
        (caffe_pb2.SolverParameter, "layer_wise_reduce", 41),
        (caffe_pb2.SolverParameter, "weights", 42),
        (caffe_pb2.BlobProto, "shape", 7),
        (caffe_pb2.V1LayerParameter, "convolution_param", 10),
        (caffe_pb2.V1LayerParameter, "layer", 1),
        (caffe_pb2.PoolingParameter, "round_mode", 13),
    ],
)
def test_field_numbers_match_caffe(message, field, number):
    assert _field(message, field).number == number


def test_defaults_match_caffe():
    pooling = _field(caffe_pb2.PoolingParameter, "pool")
    assert pooling.default_value == caffe_pb2.PoolingParameter.MAX
    assert _field(caffe_pb2.ConvolutionParameter, "bias_term").default_value is True
    assert _field(caffe_pb2.FillerParameter, "type").default_value == "constant"
    assert _field(caffe_pb2.SolverParameter, "type").default_value == "SGD"
    assert (
        _field(caffe_pb2.LossParameter, "normalization").default_value
        == caffe_pb2.LossParameter.VALID
    )
    # Float fields are stored as float32, so compare at that precision.
    assert math.isclose(
        _field(caffe_pb2.SolverParameter, "momentum2").default_value, 0.999, rel_tol=1e-6
    )
    assert math.isclose(
        _field(caffe_pb2.SolverParameter, "delta").default_value, 1e-8, rel_tol=1e-6
    )
    assert _field(caffe_pb2.NetState, "phase").default_value == caffe_pb2.TEST
    assert _field(caffe_pb2.SolverParameter, "random_seed").default_value == -1
    assert caffe_pb2.V1LayerParameter.CONVOLUTION == 4


def test_labels_types_and_packing():
    dim = _field(caffe_pb2.BlobShape, "dim")
    assert dim.type == descriptor.FieldDescriptor.TYPE_INT64
    assert dim.is_packed
    assert _field(caffe_pb2.BlobProto, "data").is_packed
    assert not _field(caffe_pb2.ConvolutionParameter, "kernel_size").is_packed
    assert _field(caffe_pb2.ClipParameter, "min").is_required
    assert _field(caffe_pb2.LayerParameter, "bottom").is_repeated


LENET_PROTOTXT = """
name: "LeNet"
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "pool1"
  bottom: "label"
  top: "loss"
}
"""


def test_prototxt_round_trip():
    net = text_format.Merge(LENET_PROTOTXT, caffe_pb2.NetParameter())

    assert [layer.name for layer in net.layer] == ["mnist", "conv1", "pool1", "loss"]
    data, conv = net.layer[0], net.layer[1]
    assert data.include[0].phase == caffe_pb2.TRAIN
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert conv.convolution_param.bias_term  # unset, so Caffe's default applies

    wire = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert wire == net
    text = text_format.Merge(text_format.MessageToString(net), caffe_pb2.NetParameter())
    assert text == net


V1_PROTOTXT = """
name: "legacy"
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param { num_output: 8 kernel_size: 3 }
}
layers {
  name: "relu1"
  type: RELU
  bottom: "conv1"
  top: "conv1"
}
"""


def test_v1_layers_parse():
    net = text_format.Merge(V1_PROTOTXT, caffe_pb2.NetParameter())

    assert len(net.layer) == 0
    assert [layer.name for layer in net.layers] == ["conv1", "relu1"]
    conv = net.layers[0]
    assert conv.type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert list(conv.blobs_lr) == [1.0, 2.0]
    assert conv.convolution_param.num_output == 8
    assert net.layers[1].type == caffe_pb2.V1LayerParameter.RELU
