"""``debug_info: true``: Caffe's per-layer log lines, in Caffe's wording.

Each line gives the mean absolute value (``asum / count``) of a blob's data or diff:
after each layer's forward, every top and parameter (Net::ForwardDebugInfo); after
each layer's backward, every bottom and parameter that received a gradient
(BackwardDebugInfo); after the whole backward, the L1 and L2 norms of all learnable
parameters (Net::Backward); before the update, every parameter's data and the step
about to be subtracted (UpdateDebugInfo, called from Net::Update as in Caffe's
releases; a parameter shared by name names its owner). The solver turns it on for
the train net on display iterations and for the test nets always, as Caffe does.
"""

from __future__ import annotations

import logging
import math

from caffelite.logging_setup import caffe_number

logger = logging.getLogger("caffelite")


def _mean_abs(values) -> str:
    return caffe_number(abs(values).sum() / values.size)


def _param_name(net, net_param_id: int) -> str:
    """Caffe's param_display_names_: the ParamSpec name, else the index in its layer."""
    layer_id, j = net.param_layer_indices[net_param_id]
    specs = net.param.layer[layer_id].param
    return specs[j].name if j < len(specs) and specs[j].name else str(j)


def _layer_param_ids(net, layer_id: int) -> list[int]:
    return [i for i, (owner, _) in enumerate(net.param_layer_indices) if owner == layer_id]


def log_forward(net, layer_id: int) -> None:
    name = net._layer_names[layer_id]
    for blob_id, blob in zip(net.top_ids[layer_id], net.top_vecs[layer_id], strict=True):
        logger.info(
            "    [Forward] Layer %s, top blob %s data: %s",
            name,
            net._blob_names[blob_id],
            _mean_abs(blob.data),
        )
    for param_id in _layer_param_ids(net, layer_id):
        blob = net._params[param_id]
        logger.info(
            "    [Forward] Layer %s, param blob %s data: %s",
            name,
            _param_name(net, param_id),
            _mean_abs(blob.data),
        )


def log_backward(net, layer_id: int) -> None:
    name, layer = net._layer_names[layer_id], net.layers[layer_id]
    bottoms = zip(
        net.bottom_ids[layer_id],
        net.bottom_vecs[layer_id],
        net.bottom_need_backward[layer_id],
        strict=True,
    )
    for blob_id, blob, needed in bottoms:
        if needed:
            logger.info(
                "    [Backward] Layer %s, bottom blob %s diff: %s",
                name,
                net._blob_names[blob_id],
                _mean_abs(blob.diff),
            )
    for j, blob in enumerate(layer.blobs):
        if layer.param_propagate_down[j]:
            logger.info(
                "    [Backward] Layer %s, param blob %d diff: %s", name, j, _mean_abs(blob.diff)
            )


def log_param_norms(net) -> None:
    """Net::Backward's closing line (Caffe logs it at ERROR level)."""
    asum_data = asum_diff = sumsq_data = sumsq_diff = 0.0
    for blob in net.learnable_params:
        asum_data += float(abs(blob.data).sum())
        asum_diff += float(abs(blob.diff).sum())
        sumsq_data += float((blob.data * blob.data).sum())
        sumsq_diff += float((blob.diff * blob.diff).sum())
    logger.error(
        "    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
        caffe_number(asum_data),
        caffe_number(asum_diff),
        caffe_number(math.sqrt(sumsq_data)),
        caffe_number(math.sqrt(sumsq_diff)),
    )


def log_update(net) -> None:
    """Before Net::Update: parameters shared by name first, then the owners."""
    owners = net.param_owners
    for param_id in sorted(range(len(owners)), key=lambda i: owners[i] < 0):
        blob = net._params[param_id]
        layer_name = net._layer_names[net.param_layer_indices[param_id][0]]
        name = _param_name(net, param_id)
        owner = owners[param_id]
        if owner < 0:
            logger.info(
                "    [Update] Layer %s, param %s data: %s; diff: %s",
                layer_name,
                name,
                _mean_abs(blob.data),
                _mean_abs(blob.diff),
            )
        else:
            logger.info(
                "    [Update] Layer %s, param blob %s (owned by layer %s, param %s) diff: %s",
                layer_name,
                name,
                net._layer_names[net.param_layer_indices[owner][0]],
                _param_name(net, owner),
                _mean_abs(blob.diff),
            )
