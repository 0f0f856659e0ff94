"""Bring older NetParameter forms up to date before a Net is built (Caffe's upgrade_proto).

Handles the net-level ``input``/``input_shape``/``input_dim`` fields, which become
an ``Input`` layer named "input" as Caffe's UpgradeNetInput does, and old BatchNorm
definitions with learnable statistics (UpgradeNetBatchNorm). The V1
``layers { type: CONVOLUTION }`` format is upgraded by ``upgrade_v1_net`` when a
module provides it (see the layer catalogue).
"""

from __future__ import annotations

from caffelite.errors import CaffeliteError


def upgrade_net_input(param) -> None:
    """Move net-level inputs into a leading Input layer (in place)."""
    if not param.input:
        if param.input_shape or param.input_dim:
            raise CaffeliteError("net has input_shape/input_dim but no input names")
        return
    if not param.input_shape and not param.input_dim:
        # Old caffemodels list their input names without shapes: nothing to build from.
        param.ClearField("input")
        return
    from caffelite.proto import caffe_pb2

    names = list(param.input)
    shapes = [list(s.dim) for s in param.input_shape]
    if param.input_dim:
        dims = list(param.input_dim)
        if len(dims) != 4 * len(names):
            raise CaffeliteError(
                f"input_dim must give 4 values per input: {len(names)} input(s), "
                f"{len(dims)} input_dim value(s)"
            )
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
    if len(shapes) not in (len(names), 1) and not (len(shapes) == 0 and not names):
        raise CaffeliteError(f"net has {len(names)} input(s) but {len(shapes)} input shape(s)")
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=names)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape)
    layers = [layer] + list(param.layer)
    del param.layer[:]
    param.layer.extend(layers)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


def upgrade_batch_norm(param) -> None:
    """Old BatchNorm definitions declared three learnable params; their statistics are
    not learned, so Caffe's UpgradeNetBatchNorm sets lr_mult and decay_mult to 0."""
    for layer in param.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


def upgrade_net(param, source: str = "<net>") -> None:
    """All upgrades Caffe applies on load, in order."""
    if len(param.layers):
        try:
            from caffelite.upgrade_v1 import upgrade_v1_net
        except ImportError:
            raise CaffeliteError(
                f"{source} uses the legacy V1 'layers' format, which this build cannot upgrade"
            ) from None
        upgrade_v1_net(param, source)
    upgrade_net_input(param)
    upgrade_batch_norm(param)


def upgrade_net_file(source, target, binary: bool) -> bool:
    """Rewrite the net at ``source`` in the current format at ``target`` (Caffe's
    upgrade_net_proto_text/_binary tools); False when it was already current."""
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import read_binary, read_text, write_binary_atomic, write_text

    read, write = (read_binary, write_binary_atomic) if binary else (read_text, write_text)
    param = read(source, caffe_pb2.NetParameter())
    before = param.SerializeToString()
    upgrade_net(param, str(source))
    write(target, param)
    return param.SerializeToString() != before
