"""Automatic Split insertion (Caffe's insert_splits.cpp).

A top consumed by several bottoms (or consumed and also used as a loss) gets a
Split layer, so that each consumer has its own diff and the gradients are summed.
"""

from __future__ import annotations

from collections import defaultdict

from caffelite.errors import CaffeliteError


def split_layer_name(layer_name: str, blob_name: str, top_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name: str, blob_name: str, top_index: int, split_index: int) -> str:
    return f"{split_layer_name(layer_name, blob_name, top_index)}_{split_index}"


def _loss_weights(layer) -> list[float]:
    """Explicit loss weights, or a loss layer's implicit 1 on its first top.

    Caffe reads only the explicit ones here, so a loss top that also feeds another
    layer loses one of its gradients; counting the implicit weight avoids that.
    """
    if layer.loss_weight:
        return list(layer.loss_weight)
    return [1.0] if layer.type.endswith("Loss") else []


def insert_splits(param):
    """Return a copy of the NetParameter ``param`` with Split layers inserted."""
    last_producer: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    consumers: dict[tuple[int, int], int] = defaultdict(int)
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(param.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_producer:
                raise CaffeliteError(
                    f"layer {layer.name!r} (type {layer.type}) needs bottom blob {blob!r}, "
                    "which no earlier layer produces"
                )
            source_of[(i, j)] = last_producer[blob]
            consumers[last_producer[blob]] += 1
        for j, blob in enumerate(layer.top):
            last_producer[blob] = (i, j)
        for j, weight in enumerate(_loss_weights(layer)[: len(layer.top)]):
            if weight:
                loss_weight[(i, j)] = weight
                consumers[(i, j)] += 1

    result = type(param)()
    result.CopyFrom(param)
    del result.layer[:]
    handed_out: dict[tuple[int, int], int] = defaultdict(int)
    for i, original in enumerate(param.layer):
        layer = result.layer.add()
        layer.CopyFrom(original)
        for j, blob in enumerate(layer.bottom):
            top = source_of[(i, j)]
            if consumers[top] > 1:
                producer = param.layer[top[0]].name
                layer.bottom[j] = split_blob_name(producer, blob, top[1], handed_out[top])
                handed_out[top] += 1
        for j, blob in enumerate(layer.top):
            count = consumers[(i, j)]
            if count <= 1:
                continue
            split = result.layer.add()
            split.name = split_layer_name(layer.name, blob, j)
            split.type = "Split"
            split.bottom.append(blob)
            split.top.extend(split_blob_name(layer.name, blob, j, k) for k in range(count))
            weight = loss_weight.get((i, j))
            if weight:
                # The split's first top carries the loss; the producer's own top no longer does.
                split.loss_weight.extend([weight] + [0.0] * (count - 1))
                weights = _loss_weights(layer) + [0.0] * len(layer.top)
                weights[j] = 0.0
                del layer.loss_weight[:]
                layer.loss_weight.extend(weights[: len(layer.top)])
                handed_out[(i, j)] = 1
    return result
