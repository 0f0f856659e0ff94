"""Upgrade legacy ``layers { ... }`` nets to ``layer { ... }`` (Caffe's upgrade_proto).

Three steps run in Caffe's order, all in place on a NetParameter:

1. V0 -> V1: entries of ``layers`` that wrap an old ``layer { type: "conv" ... }``
   message get V1 types and typed ``*_param`` messages; V0 "padding" layers are
   folded into the padded convolution or pooling layer that reads them.
2. Data transformation: ``scale``/``mean_file``/``crop_size``/``mirror`` written in
   a Data, ImageData or WindowData layer's own parameters move to ``transform_param``.
3. V1 -> current: each V1LayerParameter becomes a LayerParameter: the type enum becomes
   the type string, ``blobs_lr``/``weight_decay``/``param``/``blob_share_mode`` become
   ``param { lr_mult decay_mult name share_mode }``, the rest is copied.
"""

from __future__ import annotations

import logging

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

logger = logging.getLogger("caffelite")

V1 = caffe_pb2.V1LayerParameter

# The V1 type enum's names and the type strings the layers register under.
_V1_TYPE_NAMES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}
_V1_TYPES = {V1.LayerType.Value(name): type_name for name, type_name in _V1_TYPE_NAMES.items()}

# V0 type strings and their V1 enum names.
_V0_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# V0 field -> {V0 type: "param_message.field"}; "*" means any type. Convolution's
# geometry fields are repeated (one value appended); pooling's are scalars.
_V0_FIELDS = {
    "num_output": {
        "conv": "convolution_param.num_output",
        "innerproduct": "inner_product_param.num_output",
    },
    "biasterm": {
        "conv": "convolution_param.bias_term",
        "innerproduct": "inner_product_param.bias_term",
    },
    "weight_filler": {
        "conv": "convolution_param.weight_filler",
        "innerproduct": "inner_product_param.weight_filler",
    },
    "bias_filler": {
        "conv": "convolution_param.bias_filler",
        "innerproduct": "inner_product_param.bias_filler",
    },
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"},
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {
        "data": "data_param.source",
        "hdf5_data": "hdf5_data_param.source",
        "images": "image_data_param.source",
        "window_data": "window_data_param.source",
        "infogain_loss": "infogain_loss_param.source",
    },
    "scale": {"*": "transform_param.scale"},
    "meanfile": {"*": "transform_param.mean_file"},
    "batchsize": {
        "data": "data_param.batch_size",
        "hdf5_data": "hdf5_data_param.batch_size",
        "images": "image_data_param.batch_size",
        "window_data": "window_data_param.batch_size",
    },
    "cropsize": {"*": "transform_param.crop_size"},
    "mirror": {"*": "transform_param.mirror"},
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}

# V1 layer types whose own parameters may carry the legacy transformation fields.
_TRANSFORM_HOSTS = {
    V1.DATA: "data_param",
    V1.IMAGE_DATA: "image_data_param",
    V1.WINDOW_DATA: "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_v1_layer_type(v1_type: int) -> str:
    """The type string of a V1 ``LayerType`` value (``CONVOLUTION`` -> "Convolution")."""
    try:
        return _V1_TYPES[v1_type]
    except KeyError:
        raise CaffeliteError(
            f"unknown V1 layer type {v1_type}; known: {', '.join(sorted(_V1_TYPE_NAMES))}"
        ) from None


def net_needs_v0_upgrade(param) -> bool:
    return any(layer.HasField("layer") for layer in param.layers)


def upgrade_v1_net(param, source: str = "<net>") -> None:
    """Turn every ``layers`` entry (V0 or V1) of ``param`` into a ``layer``, in place."""
    if net_needs_v0_upgrade(param):
        logger.warning("%s: upgrading the V0 layer format (deprecated)", source)
        upgrade_v0_net(param, source)
    upgrade_net_data_transformation(param)
    if not len(param.layers):
        return
    if len(param.layer):
        raise CaffeliteError(
            f"{source}: refusing to upgrade a net that has both V1 'layers' and current "
            "'layer' entries (as Caffe refuses); write every layer in one format"
        )
    logger.info("%s: upgrading the V1 'layers' format to 'layer'", source)
    upgraded = []
    for index, v1_layer in enumerate(param.layers):
        layer = caffe_pb2.LayerParameter()
        try:
            upgrade_v1_layer(v1_layer, layer)
        except CaffeliteError as exc:
            raise CaffeliteError(
                f"{source}: cannot upgrade layers[{index}] ({v1_layer.name!r}): {exc}"
            ) from None
        upgraded.append(layer)
    del param.layer[:]
    param.layer.extend(upgraded)
    param.ClearField("layers")


def upgrade_v1_layer(v1_layer, layer) -> None:
    """Fill LayerParameter ``layer`` from V1LayerParameter ``v1_layer``."""
    layer.Clear()
    layer.bottom.extend(v1_layer.bottom)
    layer.top.extend(v1_layer.top)
    if v1_layer.HasField("name"):
        layer.name = v1_layer.name
    layer.include.extend(v1_layer.include)
    layer.exclude.extend(v1_layer.exclude)
    if v1_layer.HasField("type"):
        layer.type = upgrade_v1_layer_type(v1_layer.type)
    layer.blobs.extend(v1_layer.blobs)

    def spec(i: int):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1_layer.param):
        spec(i).name = name
    for i, mode in enumerate(v1_layer.blob_share_mode):
        spec(i).share_mode = (
            caffe_pb2.ParamSpec.PERMISSIVE if mode == V1.PERMISSIVE else caffe_pb2.ParamSpec.STRICT
        )
    for i, lr in enumerate(v1_layer.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1_layer.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1_layer.loss_weight)
    for field, value in v1_layer.ListFields():
        if field.name.endswith("_param"):
            getattr(layer, field.name).CopyFrom(value)
    if v1_layer.HasField("layer"):
        logger.warning("layer %r still holds a V0 'layer' message; it is ignored", layer.name)


def upgrade_net_data_transformation(param) -> None:
    """Move legacy transformation fields of V1 data layers into ``transform_param``."""
    for v1_layer in param.layers:
        host = _TRANSFORM_HOSTS.get(v1_layer.type)
        if host is None or not v1_layer.HasField(host):
            continue
        own = getattr(v1_layer, host)
        for field in _TRANSFORM_FIELDS:
            if own.HasField(field):
                setattr(v1_layer.transform_param, field, getattr(own, field))
                own.ClearField(field)


# ---- V0 --------------------------------------------------------------------------------


def upgrade_v0_net(param, source: str = "<net>") -> None:
    """Fold V0 padding layers into their consumers, then give each entry V1 fields."""
    connections = _fold_padding_layers(param, source)
    upgraded = []
    for connection in connections:
        v1_layer = caffe_pb2.V1LayerParameter()
        _upgrade_v0_layer(connection, v1_layer, source)
        upgraded.append(v1_layer)
    del param.layers[:]
    param.layers.extend(upgraded)


def _fold_padding_layers(param, source: str) -> list:
    """Copies of the non-padding entries; a conv/pool fed by a padding layer takes its
    pad and reads the padding layer's input instead (Caffe's UpgradeV0PaddingLayers)."""
    last_producer = {name: -1 for name in param.input}
    kept = []
    for i, connection in enumerate(param.layers):
        v0 = connection.layer
        current = None
        if v0.type != "padding":
            current = caffe_pb2.V1LayerParameter()
            current.CopyFrom(connection)
            kept.append(current)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise CaffeliteError(
                    f"{source}: layer {v0.name!r} reads blob {blob!r}, which no earlier "
                    "layer or input produces"
                )
            producer_index = last_producer[blob]
            if producer_index < 0:
                continue
            producer = param.layers[producer_index]
            if producer.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise CaffeliteError(
                    f"{source}: padding layer {producer.layer.name!r} feeds layer "
                    f"{v0.name!r} of type {v0.type!r}; only conv and pool layers may be padded"
                )
            if len(connection.bottom) != 1:
                raise CaffeliteError(
                    f"{source}: padded layer {v0.name!r} must have one bottom, "
                    f"has {len(connection.bottom)}"
                )
            if len(producer.bottom) != 1 or len(producer.top) != 1:
                raise CaffeliteError(
                    f"{source}: padding layer {producer.layer.name!r} must have one bottom "
                    "and one top"
                )
            current.layer.pad = producer.layer.pad
            current.bottom[j] = producer.bottom[0]
        for blob in connection.top:
            last_producer[blob] = i
    return kept


def _upgrade_v0_layer(connection, v1_layer, source: str) -> None:
    """Caffe's UpgradeV0LayerParameter: one V0-wrapping entry to V1 fields."""
    v1_layer.bottom.extend(connection.bottom)
    v1_layer.top.extend(connection.top)
    if not connection.HasField("layer"):
        return
    v0 = connection.layer
    if v0.HasField("name"):
        v1_layer.name = v0.name
    layer_type = v0.type
    if v0.HasField("type"):
        if layer_type not in _V0_TYPES:
            raise CaffeliteError(
                f"{source}: layer {v0.name!r} has unknown V0 type {layer_type!r}; "
                f"known: {', '.join(sorted(_V0_TYPES))}"
            )
        v1_layer.type = V1.LayerType.Value(_V0_TYPES[layer_type])
    v1_layer.blobs.extend(v0.blobs)
    v1_layer.blobs_lr.extend(v0.blobs_lr)
    v1_layer.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        targets = _V0_FIELDS.get(field.name)
        if targets is None:
            continue
        path = targets.get(layer_type, targets.get("*"))
        if path is None:
            logger.warning(
                "%s: V0 layer %r: parameter %s does not apply to type %r; ignored",
                source,
                v0.name,
                field.name,
                layer_type,
            )
            continue
        _set_path(v1_layer, path, value)


def _set_path(message, path: str, value) -> None:
    """Set ``a_param.field`` (append to a repeated field, copy a message)."""
    *parents, name = path.split(".")
    for parent in parents:
        message = getattr(message, parent)
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        getattr(message, name).append(value)
    elif field.message_type is not None:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)
