"""Net: a directed acyclic graph of layers wired from a NetParameter (Caffe's Net::Init).

Building a net: upgrade old forms, keep the layers the NetState includes, insert
Split layers, create each layer and its top blobs in order, set them up, decide
which layers need backward, and share parameters by ParamSpec name.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from caffelite import backend, chains, debug_info, device_checks, fold
from caffelite.blob import Blob, proto_shape, shapes_match
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN, create_layer
from caffelite.limits import SizeLimitError, check_net_memory, name_blob
from caffelite.net_pycaffe import PycaffeNetMixin
from caffelite.net_state import filter_net
from caffelite.prototxt import read_binary, read_text, write_binary_atomic
from caffelite.splits import insert_splits
from caffelite.trust import check_python_layers
from caffelite.upgrade import upgrade_net


def load_net_param(source):
    """A NetParameter from a prototxt path (or a NetParameter, copied)."""
    from caffelite.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    if isinstance(source, caffe_pb2.NetParameter):
        param.CopyFrom(source)
        name = param.name or "<NetParameter>"
    else:
        read_text(source, param)
        name = str(source)
    upgrade_net(param, name)
    return param


class Net(PycaffeNetMixin):
    """A network built for one phase; pycaffe-compatible.

    ``Net(network_file, phase, weights=None, stages=None, level=0)`` (pycaffe's keywords)
    or the legacy ``Net(network_file, weights, phase)``. ``network_file`` is a prototxt
    path or a NetParameter. ``allow_python_layers=False`` refuses ``Python`` layers (see
    caffelite.trust).
    """

    def __init__(
        self,
        network_file,
        phase=None,
        weights=None,
        stages=None,
        level=0,
        *legacy,
        allow_python_layers: bool | None = None,
    ):
        model = network_file
        if isinstance(phase, (str, Path)):  # legacy pycaffe: Net(model, weights, phase)
            weights, phase = phase, weights
        if legacy:
            raise CaffeliteError(
                "Net() takes (network_file, phase, weights=None, stages=None, level=0)"
            )
        if phase not in (TRAIN, TEST):
            raise CaffeliteError(f"Net phase must be caffe.TRAIN or caffe.TEST, got {phase!r}")
        param = load_net_param(model)
        where = str(model) if isinstance(model, (str, Path)) else f"net {param.name!r}"
        check_python_layers(param, allow_python_layers, where)
        state = param.state
        state.phase = phase
        state.level = level
        if stages is not None:
            del state.stage[:]
            state.stage.extend(stages)
        self._source = str(model) if not hasattr(model, "DESCRIPTOR") else param.name
        try:
            self._init(param)
        except BaseException:
            self.close()  # a net that failed to build leaves no reader threads behind
            raise
        if weights is not None:
            self.copy_from(weights)

    # ---- construction ------------------------------------------------------
    def _init(self, param) -> None:
        #: pycaffe's per-layer hooks (before_forward, ..., after_backward): callables of
        #: the layer index, e.g. a data-parallel reducer that starts on finished gradients.
        self._layer_callbacks: dict[str, list] = {
            "before_forward": [],
            "after_forward": [],
            "before_backward": [],
            "after_backward": [],
        }
        self.name = param.name
        self.phase = param.state.phase
        #: The device this net's blobs and layers live on (None: the host, CPU mode); a
        #: net keeps it whatever the mode later is (its layers' scratch arrays are there).
        self.device = backend.new_memory_device()
        self.folding = True  # fold BatchNorm/Scale/ReLU into Convolution in TEST passes
        self._fold_plan = None
        #: Run in-place BatchNorm/Scale/ReLU chains as one pass each way in whole passes
        #: (caffelite.chains; the same values to the bit), in any phase.
        self.chaining = True
        self._chain_plan = None
        self._forward_was_folded = False
        #: Log Caffe's per-layer debug lines (caffelite.debug_info); the solver sets it.
        self.debug_info = bool(param.debug_info)
        self.param = insert_splits(filter_net(param, param.state))
        self.layers = []
        self._layer_names = []
        self.bottom_ids: list[list[int]] = []
        self.top_ids: list[list[int]] = []
        # The Blob objects each layer reads and writes (Caffe's bottom_vecs_/top_vecs_).
        self.bottom_vecs: list[list[Blob]] = []
        self.top_vecs: list[list[Blob]] = []
        self._blobs: list[Blob] = []
        self._blob_names: list[str] = []
        self.blob_loss_weight_list: list[float] = []
        self.input_ids: list[int] = []
        blob_ids: dict[str, int] = {}
        available: set[str] = set()
        self.bottom_need_backward: list[list[bool]] = []
        blob_need_backward: list[bool] = []
        self.layer_need_backward: list[bool] = []

        for layer_id, layer_param in enumerate(self.param.layer):
            if not layer_param.HasField("phase"):
                layer_param.phase = self.phase
            if layer_param.propagate_down and len(layer_param.propagate_down) != len(
                layer_param.bottom
            ):
                raise CaffeliteError(
                    f"layer {layer_param.name!r}: propagate_down has "
                    f"{len(layer_param.propagate_down)} values for "
                    f"{len(layer_param.bottom)} bottoms"
                )
            layer = create_layer(layer_param)  # its own phase: explicit, or the net's
            self.layers.append(layer)
            self._layer_names.append(layer_param.name)

            bottoms, need = [], []
            for j, name in enumerate(layer_param.bottom):
                if name not in available:
                    raise CaffeliteError(
                        f"layer {layer_param.name!r} (type {layer_param.type}) needs bottom "
                        f"blob {name!r}, which is not produced by an earlier layer"
                    )
                blob_id = blob_ids[name]
                available.discard(name)
                bottoms.append(blob_id)
                wants = blob_need_backward[blob_id]
                if layer_param.propagate_down:
                    wants = layer_param.propagate_down[j]
                need.append(wants)
            self.bottom_ids.append(bottoms)
            self.bottom_vecs.append([self._blobs[i] for i in bottoms])
            self.bottom_need_backward.append(need)

            tops = []
            for j, name in enumerate(layer_param.top):
                in_place = j < len(layer_param.bottom) and layer_param.bottom[j] == name
                if in_place:
                    blob_id = blob_ids[name]
                elif name in blob_ids:
                    raise CaffeliteError(
                        f"top blob {name!r} of layer {layer_param.name!r} is produced by "
                        "more than one layer"
                    )
                else:
                    blob_id = len(self._blobs)
                    blob_ids[name] = blob_id
                    self._blobs.append(Blob())
                    self._blob_names.append(name)
                    blob_need_backward.append(False)
                    self.blob_loss_weight_list.append(0.0)
                    if layer_param.type == "Input":
                        self.input_ids.append(blob_id)
                available.add(name)
                tops.append(blob_id)
            self.top_ids.append(tops)
            self.top_vecs.append([self._blobs[i] for i in tops])

            try:
                layer.setup_layer(self.bottom_vecs[layer_id], self.top_vecs[layer_id])
            except SizeLimitError as exc:
                raise name_blob(exc, layer, self._named_tops(layer_id)) from None
            for j, blob_id in enumerate(tops):
                if layer.loss_weights[j]:
                    self.blob_loss_weight_list[blob_id] = layer.loss_weights[j]

            needs_backward = any(need)
            for j in range(len(layer.blobs)):
                spec = layer_param.param[j] if j < len(layer_param.param) else None
                learns = spec is None or spec.lr_mult != 0
                layer.param_propagate_down[j] = learns
                needs_backward |= learns
            self.layer_need_backward.append(needs_backward)
            if needs_backward:
                for blob_id in tops:
                    blob_need_backward[blob_id] = True

        self._prune_backward(blob_need_backward)
        # Caffe keeps the unconsumed blobs in a std::set, so outputs come in name order.
        self.output_ids = [blob_ids[name] for name in sorted(available)]
        self._init_params()
        self.blobs = OrderedDict(zip(self._blob_names, self._blobs, strict=True))
        check_net_memory(self)

    def _prune_backward(self, blob_need_backward: list[bool]) -> None:
        """Skip backward where nothing below feeds a loss, or nothing needs a gradient."""
        under_loss: set[int] = set()
        skip: set[int] = set()
        for layer_id in reversed(range(len(self.layers))):
            layer = self.layers[layer_id]
            tops = self.top_ids[layer_id]
            contributes = any(layer.loss_weights[j] or t in under_loss for j, t in enumerate(tops))
            skip_down = all(t in skip for t in tops)
            need = self.bottom_need_backward[layer_id]
            if self.layer_need_backward[layer_id] and skip_down:
                self.layer_need_backward[layer_id] = False
                need[:] = [False] * len(need)
            if not contributes:
                self.layer_need_backward[layer_id] = False
            for j, blob_id in enumerate(self.bottom_ids[layer_id]):
                if contributes:
                    under_loss.add(blob_id)
                else:
                    need[j] = False
                if not need[j]:
                    skip.add(blob_id)
        if self.param.force_backward:
            for layer_id, layer in enumerate(self.layers):
                self.layer_need_backward[layer_id] = True
                layer.backward_follows = True
                need = self.bottom_need_backward[layer_id]
                for j in range(len(need)):
                    need[j] = need[j] or layer.allow_force_backward(j)
                layer.param_propagate_down = [True] * len(layer.blobs)

    def _init_params(self) -> None:
        """Collect parameters; a ParamSpec name seen before shares the owner's blob."""
        self._params: list[Blob] = []
        self.param_owners: list[int] = []
        self.param_layer_indices: list[tuple[int, int]] = []
        self.learnable_params: list[Blob] = []
        self.learnable_param_ids: list[int] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        self.has_params_lr: list[bool] = []
        self.has_params_decay: list[bool] = []
        named: dict[str, int] = {}
        for layer_id, layer in enumerate(self.layers):
            layer_param = self.param.layer[layer_id]
            for j in range(len(layer.blobs)):
                spec = layer_param.param[j] if j < len(layer_param.param) else None
                net_id = len(self._params)
                self.param_layer_indices.append((layer_id, j))
                name = spec.name if spec is not None else ""
                if not name or name not in named:
                    if name:
                        named[name] = net_id
                    self.param_owners.append(-1)
                    self._params.append(layer.blobs[j])
                    self.learnable_param_ids.append(len(self.learnable_params))
                    self.learnable_params.append(layer.blobs[j])
                    self.has_params_lr.append(spec is not None and spec.HasField("lr_mult"))
                    self.has_params_decay.append(spec is not None and spec.HasField("decay_mult"))
                    self.params_lr.append(spec.lr_mult if spec is not None else 1.0)
                    self.params_weight_decay.append(spec.decay_mult if spec is not None else 1.0)
                    continue
                owner_id = named[name]
                self.param_owners.append(owner_id)
                self._share_param(layer, j, spec, owner_id)
                self._params.append(layer.blobs[j])
                learnable_id = self.learnable_param_ids[owner_id]
                self.learnable_param_ids.append(learnable_id)
                self._merge_multiplier(
                    spec, "lr_mult", learnable_id, self.has_params_lr, self.params_lr
                )
                self._merge_multiplier(
                    spec,
                    "decay_mult",
                    learnable_id,
                    self.has_params_decay,
                    self.params_weight_decay,
                )

    def _share_param(self, layer, j: int, spec, owner_id: int) -> None:
        from caffelite.proto import caffe_pb2

        owner_layer, owner_j = self.param_layer_indices[owner_id]
        owner = self.layers[owner_layer].blobs[owner_j]
        mine = layer.blobs[j]
        where = (
            f"shared parameter {spec.name!r}: layer {layer.name!r} param {j} has shape "
            f"{mine.shape}, owner layer {self._layer_names[owner_layer]!r} has {owner.shape}"
        )
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if mine.count != owner.count:
                raise CaffeliteError(f"{where} (counts must match)")
            mine.share_data(owner)
            mine.share_diff(owner)
        else:
            if mine.shape != owner.shape:
                raise CaffeliteError(f"{where} (shapes must match; or share_mode: PERMISSIVE)")
            layer.blobs[j] = owner

    def _merge_multiplier(self, spec, field: str, learnable_id: int, has: list, values: list):
        if not spec.HasField(field):
            return
        value = getattr(spec, field)
        if has[learnable_id] and values[learnable_id] != value:
            raise CaffeliteError(
                f"shared parameter {spec.name!r} has mismatched {field}: "
                f"{values[learnable_id]} and {value}"
            )
        has[learnable_id] = True
        values[learnable_id] = value

    # ---- pycaffe views -------------------------------------------------------
    @property
    def params(self) -> OrderedDict:
        return OrderedDict(
            (name, layer.blobs)
            for name, layer in zip(self._layer_names, self.layers, strict=True)
            if len(layer.blobs)
        )

    @property
    def layer_dict(self) -> OrderedDict:
        return OrderedDict(zip(self._layer_names, self.layers, strict=True))

    @property
    def _blob_loss_weights(self) -> list[float]:
        return self.blob_loss_weight_list

    @property
    def blob_loss_weights(self) -> OrderedDict:
        return OrderedDict(zip(self._blob_names, self.blob_loss_weight_list, strict=True))

    @property
    def inputs(self) -> list[str]:
        return [self._blob_names[i] for i in self.input_ids]

    @property
    def outputs(self) -> list[str]:
        return [self._blob_names[i] for i in self.output_ids]

    @property
    def top_names(self) -> OrderedDict:
        return OrderedDict(
            (name, [self._blob_names[i] for i in ids])
            for name, ids in zip(self._layer_names, self.top_ids, strict=True)
        )

    @property
    def bottom_names(self) -> OrderedDict:
        return OrderedDict(
            (name, [self._blob_names[i] for i in ids])
            for name, ids in zip(self._layer_names, self.bottom_ids, strict=True)
        )

    def _named_tops(self, layer_id: int) -> dict[str, Blob]:
        names = self.param.layer[layer_id].top
        return dict(zip(names, self.top_vecs[layer_id], strict=True))

    def _first_layer_by_name(self) -> dict:
        """Caffe allows repeated layer names; weights go to the first layer of a name."""
        first: dict = {}
        for name, layer in zip(self._layer_names, self.layers, strict=True):
            first.setdefault(name, layer)
        return first

    def _layer_index(self, name: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise CaffeliteError(f"net {self.name!r} has no layer named {name!r}") from None

    # ---- running -----------------------------------------------------------
    def before_forward(self, run) -> None:
        """Call ``run(layer_id)`` before each layer's forward (pycaffe's hook)."""
        self._layer_callbacks["before_forward"].append(run)

    def after_forward(self, run) -> None:
        """Call ``run(layer_id)`` after each layer's forward."""
        self._layer_callbacks["after_forward"].append(run)

    def before_backward(self, run) -> None:
        """Call ``run(layer_id)`` before each layer's backward (also layers that skip it)."""
        self._layer_callbacks["before_backward"].append(run)

    def after_backward(self, run) -> None:
        """Call ``run(layer_id)`` after each layer's backward (also layers that skip it)."""
        self._layer_callbacks["after_backward"].append(run)

    def _run_callbacks(self, kind: str, layer_id: int) -> None:
        for run in self._layer_callbacks[kind]:
            run(layer_id)

    def forward_layer(self, layer_id: int) -> float:
        """Reshape and run one layer; its loss, dot(top data, top diff) over its loss tops
        (Caffe's Layer::Forward: the diff holds the loss weight unless the user changed it)."""
        layer, top = self.layers[layer_id], self.top_vecs[layer_id]
        bottom = self.bottom_vecs[layer_id]
        self._run_callbacks("before_forward", layer_id)
        try:
            layer.reshape(bottom, top)
            layer.forward(bottom, top)
            with self.device_scope():
                layer.refresh_loss_diffs(top)
                losses = [
                    top[j].data.ravel() @ top[j].diff.ravel()
                    for j, weight in enumerate(layer.loss_weights)
                    if weight
                ]
        except SizeLimitError as exc:
            raise name_blob(exc, layer, self._named_tops(layer_id)) from None
        if self.debug_info:
            debug_info.log_forward(self, layer_id)
        self._run_callbacks("after_forward", layer_id)
        if self.device is not None:
            return sum(losses)  # stays on the device: read at display, not every iteration
        return sum(float(loss) for loss in losses)

    def backward_layer(self, layer_id: int) -> None:
        """Backpropagate through one layer, if it needs it, from whatever its top diffs hold."""
        self._run_callbacks("before_backward", layer_id)
        if self.layer_need_backward[layer_id]:
            layer, top = self.layers[layer_id], self.top_vecs[layer_id]
            layer.backward(top, self.bottom_need_backward[layer_id], self.bottom_vecs[layer_id])
            if self.debug_info:
                debug_info.log_backward(self, layer_id)
        self._run_callbacks("after_backward", layer_id)

    def forward_from_to(self, start: int = 0, end: int | None = None) -> float:
        """Run layers ``start..end`` (inclusive); return the weighted loss.

        A whole TEST pass runs with BatchNorm/Scale/ReLU folded into the Convolution
        before them where :mod:`caffelite.fold` finds it exact (``folding = False``
        turns that off; so do per-layer forward hooks, which must see every layer)."""
        end = len(self.layers) - 1 if end is None else end
        self._forward_was_folded = False
        hooked = self._layer_callbacks["before_forward"] or self._layer_callbacks["after_forward"]
        whole = not hooked and start == 0 and end == len(self.layers) - 1
        if self.folding and whole:
            folds = self._folds()
            if folds:
                self._forward_was_folded = True
                return fold.forward(self, folds)
        by_chain = self._chains() if whole and not self.debug_info else {}
        loss, layer_id = 0.0, start
        while layer_id <= end:
            chain = by_chain.get(layer_id)
            if chain is not None:
                chain.forward(self)
                layer_id = chain.last + 1
                continue
            loss += self.forward_layer(layer_id)
            layer_id += 1
        return loss

    def _folds(self) -> dict:
        if self._fold_plan is None:
            self._fold_plan = fold.plan(self)
        return self._fold_plan

    def _chains(self) -> dict:
        """The net's chains (caffelite.chains) by the id of their BatchNorm; none when
        ``chaining`` is off."""
        if not self.chaining:
            return {}
        if self._chain_plan is None:
            self._chain_plan = chains.plan(self)
        return self._chain_plan

    def backward_from_to(self, start: int | None = None, end: int = 0) -> None:
        """Backpropagate through layers ``start`` down to ``end`` (inclusive)."""
        if self._forward_was_folded:
            # the folded layers kept nothing for backward: rerun the forward unfolded
            folding, self.folding = self.folding, False
            try:
                self.forward_from_to()
            finally:
                self.folding = folding
        start = len(self.layers) - 1 if start is None else start
        hooked = self._layer_callbacks["before_backward"] or self._layer_callbacks["after_backward"]
        whole = not hooked and not self.debug_info and start == len(self.layers) - 1 and end == 0
        by_last = {chain.last: chain for chain in self._chains().values()} if whole else {}
        layer_id = start
        while layer_id >= end:
            chain = by_last.get(layer_id)
            if chain is not None and chain.backward(self):
                layer_id = chain.first - 1
                continue
            self.backward_layer(layer_id)
            layer_id -= 1

    def forward_backward(self) -> float:
        """One forward and backward pass over the whole net; the loss (Caffe's ForwardBackward)."""
        loss = self.forward_from_to()
        self.backward_from_to()
        if self.debug_info:
            debug_info.log_param_norms(self)
        return loss

    def forward(self, blobs=None, start=None, end=None, **inputs) -> dict:
        """pycaffe's forward: set ``inputs`` by blob name, run, return output arrays."""
        self._set_arrays(inputs, "data")
        start_id = self._layer_index(start) if start is not None else 0
        if end is not None:
            end_id = self._layer_index(end)
            wanted = set(self.top_names[end]) | set(blobs or [])
        else:
            end_id = len(self.layers) - 1
            wanted = set(self.outputs) | set(blobs or [])
        self.forward_from_to(start_id, end_id)
        device_checks.raise_pending()  # the outputs come to the host now anyway
        return {name: self.blobs[name].data for name in wanted}

    def backward(self, diffs=None, start=None, end=None, **top_diffs) -> dict:
        """pycaffe's backward: set output diffs by name, run, return input diffs."""
        self._set_arrays(top_diffs, "diff")
        start_id = self._layer_index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_id = self._layer_index(end)
            wanted = set(self.bottom_names[end]) | set(diffs or [])
        else:
            end_id = 0
            wanted = set(self.inputs) | set(diffs or [])
        self.backward_from_to(start_id, end_id)
        return {name: self.blobs[name].diff for name in wanted}

    def _set_arrays(self, arrays: dict, field: str) -> None:
        for name, array in arrays.items():
            if name not in self.blobs:
                raise CaffeliteError(f"net {self.name!r} has no blob named {name!r}")
            blob = self.blobs[name]
            if np.shape(array) != blob.shape:
                raise CaffeliteError(
                    f"blob {name!r} has shape {blob.shape}; the {field} given has shape "
                    f"{np.shape(array)} (reshape the blob first)"
                )
            getattr(blob, field)[...] = array

    # ---- pycaffe's batch helpers --------------------------------------------------
    def set_input_arrays(self, data, labels) -> None:
        """Feed the first layer, which must be MemoryData (as float32, C-contiguous copies
        where needed; labels may be (N,) or pycaffe's (N, 1, 1, 1))."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise CaffeliteError(
                "set_input_arrays needs a net whose first layer is MemoryData; "
                f"net {self.name!r} starts with {self.layers[0].type if self.layers else None}"
            )
        self.layers[0].set_input_arrays(
            np.ascontiguousarray(data, dtype=np.float32),
            np.ascontiguousarray(labels, dtype=np.float32),
        )

    def forward_all(self, blobs=None, **inputs) -> dict:
        """Forward any number of items in batches of the net's input size; the outputs
        (and ``blobs``) of all batches, joined, without the last batch's padding."""
        return self.forward_backward_all(blobs=blobs, **inputs)[0]

    def forward_backward_all(self, blobs=None, diffs=None, **arrays):
        """pycaffe's forward_backward_all: ``arrays`` holds inputs (by input name) and
        output diffs (by output name); returns (outputs, input diffs), all batches joined."""
        feeds = {name: arrays.pop(name) for name in self.inputs if name in arrays}
        top_diffs = {name: arrays.pop(name) for name in self.outputs if name in arrays}
        if arrays:
            raise CaffeliteError(
                f"{', '.join(sorted(arrays))}: not an input ({', '.join(self.inputs)}) or an "
                f"output ({', '.join(self.outputs)}) of net {self.name!r}"
            )
        if not feeds:
            raise CaffeliteError(f"give at least one input array ({', '.join(self.inputs)})")
        outputs = {name: [] for name in set(self.outputs) | set(blobs or [])}
        grads = {name: [] for name in set(self.inputs) | set(diffs or [])} if top_diffs else {}
        diff_batches = self._batches(top_diffs) if top_diffs else None
        for batch, valid in self._batches(feeds):
            for name, array in self.forward(blobs=blobs, **batch).items():
                outputs[name].append(array[:valid].copy())
            if diff_batches is not None:
                batch_diffs, _ = next(diff_batches)
                for name, array in self.backward(diffs=diffs, **batch_diffs).items():
                    grads[name].append(array[:valid].copy())
        joined_out = {name: np.concatenate(parts) for name, parts in outputs.items()}
        joined_grads = {name: np.concatenate(parts) for name, parts in grads.items()}
        return joined_out, joined_grads

    def _batches(self, arrays: dict):
        """(batch dict, number of real items) per batch of the net's batch size."""
        count = len(next(iter(arrays.values())))
        size = self.blobs[next(iter(arrays))].shape[0]
        for start in range(0, count, size):
            batch = {}
            for name, array in arrays.items():
                chunk = np.asarray(array[start : start + size])
                if len(chunk) < size:
                    pad = np.zeros((size - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                batch[name] = chunk
            yield batch, min(size, count - start)

    def close(self) -> None:
        """Stop the layers' reader threads and close their files (Data, HDF5Output)."""
        for layer in getattr(self, "layers", []):
            close = getattr(layer, "close", None)
            if close is not None:
                close()

    def reshape(self) -> None:
        for layer_id, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[layer_id], self.top_vecs[layer_id])

    def device_scope(self) -> backend.device_scope:
        """Where code outside the layers (the solver's update) computes on this net's blobs."""
        return backend.device_scope(self.device)

    def clear_param_diffs(self) -> None:
        with self.device_scope():
            for blob in self.learnable_params:
                blob.diff[...] = 0

    def update(self) -> None:
        """data -= diff for every learnable parameter (Caffe's Net::Update)."""
        if self.debug_info:
            debug_info.log_update(self)
        with self.device_scope():
            for blob in self.learnable_params:
                blob.data -= blob.diff

    # ---- weights -----------------------------------------------------------
    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter memory for layers of the same name (test nets)."""
        theirs = other._first_layer_by_name()
        for name, layer in zip(self._layer_names, self.layers, strict=True):
            source = theirs.get(name)
            if source is None or not len(layer.blobs):
                continue
            if len(source.blobs) != len(layer.blobs):
                raise CaffeliteError(
                    f"cannot share layer {name!r}: {len(source.blobs)} parameter blobs in the "
                    f"source, {len(layer.blobs)} here"
                )
            for j, (mine, src) in enumerate(zip(layer.blobs, source.blobs, strict=True)):
                if mine.shape != src.shape:
                    raise CaffeliteError(
                        f"cannot share layer {name!r} param {j}: shape {src.shape} in the "
                        f"source, {mine.shape} here"
                    )
                mine.share_data(src)

    def copy_from(self, path) -> None:
        """Load trained weights from a binary .caffemodel (or .h5), matching layers by name."""
        from caffelite.proto import caffe_pb2

        path = str(path)
        if path.endswith((".h5", ".hdf5")):
            from caffelite.hdf5 import load_net_hdf5

            load_net_hdf5(self, path)
            return
        param = read_binary(path, caffe_pb2.NetParameter())
        if len(param.layers):  # V0/V1 weights keep names and blobs in the old fields
            upgrade_net(param, path)
        self.copy_trained_layers(param, path)

    def save_hdf5(self, path, write_diff: bool = False) -> None:
        """Write the weights in Caffe's HDF5 layout (needs h5py)."""
        from caffelite.hdf5 import save_net_hdf5

        save_net_hdf5(self, path, write_diff)

    def load_hdf5(self, path) -> None:
        from caffelite.hdf5 import load_net_hdf5

        load_net_hdf5(self, path)

    def copy_trained_layers(self, param, source: str = "<NetParameter>") -> None:
        mine = self._first_layer_by_name()
        for layer_param in param.layer:
            layer = mine.get(layer_param.name)
            if layer is None or not len(layer_param.blobs):
                continue
            if len(layer_param.blobs) != len(layer.blobs):
                raise CaffeliteError(
                    f"{source}: layer {layer_param.name!r} has {len(layer_param.blobs)} "
                    f"parameter blobs in the file, {len(layer.blobs)} in the net"
                )
            for j, (proto, blob) in enumerate(zip(layer_param.blobs, layer.blobs, strict=True)):
                shape = proto_shape(proto)
                if not shapes_match(shape, blob.shape):
                    raise CaffeliteError(
                        f"{source}: cannot copy param {j} of layer {layer_param.name!r}: shape "
                        f"{shape} in the file, {blob.shape} in the net. To learn this layer "
                        "from scratch instead, rename it."
                    )
                values = _blob_values(proto, blob.count)
                if values is None:
                    raise CaffeliteError(
                        f"{source}: param {j} of layer {layer_param.name!r} is truncated "
                        f"(expected {blob.count} values)"
                    )
                blob.data[...] = values.reshape(blob.shape)

    def to_proto(self, write_diff: bool = False):
        """The net as a NetParameter with its weights (Caffe's Net::ToProto)."""
        from caffelite.proto import caffe_pb2

        param = caffe_pb2.NetParameter(name=self.name)
        for layer in self.layers:
            entry = param.layer.add()
            entry.CopyFrom(layer.layer_param)
            del entry.blobs[:]
            entry.blobs.extend(blob.to_proto(write_diff) for blob in layer.blobs)
        return param

    def save(self, path) -> None:
        """Write a binary .caffemodel that Caffe can read (atomically)."""
        write_binary_atomic(path, self.to_proto())


def _blob_values(proto, count: int):
    for field in ("data", "double_data"):
        values = getattr(proto, field)
        if len(values) == count:
            return np.asarray(values, dtype=np.float32)
    return None
