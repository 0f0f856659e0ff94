"""The Layer contract and the registry keyed by the prototxt ``type`` string.

A layer knows only its bottoms, its tops and its parameter blobs (``self.blobs``):

* ``setup(bottom, top)`` reads the layer parameters and creates the parameter blobs
  (skipped when they were already loaded); it runs once.
* ``reshape(bottom, top)`` sizes the tops and scratch buffers; it runs before every
  forward, so a net can change its input shape between batches.
* ``forward(bottom, top)`` writes ``top[i].data``.
* ``backward(top, propagate_down, bottom)`` reads ``top[i].diff`` and

  - **overwrites** ``bottom[i].diff`` where ``propagate_down[i]`` is true;
  - **accumulates** (``+=``) into ``self.blobs[j].diff`` where
    ``self.param_propagate_down[j]`` is true.

  Accumulating parameter gradients is what makes ``iter_size`` and shared weights
  correct; the Solver clears them at the start of every step.

Blob counts are declared as class attributes and checked here, once, for all layers.
A custom layer is one class plus ``@register_layer("MyType")``.

In GPU mode a layer computes where its blobs live: each of the four methods runs in
the device scope of the blobs it is given (:func:`caffelite.backend.device_scope`), so
``blob.data`` and ``self.xp`` are the device's there, whoever calls it (a Net, a test,
pycaffe code calling ``layer.forward``), unless ``device_arrays`` is False.
"""

from __future__ import annotations

import functools

from caffelite import backend
from caffelite.blob import Blob, shapes_match
from caffelite.errors import CaffeliteError
from caffelite.limits import SizeLimitError

TRAIN = 0
TEST = 1


class BlobVec(list):
    """``layer.blobs``: a list of Blobs with pycaffe's ``add_blob(*shape)``."""

    def add_blob(self, *shape) -> Blob:
        try:
            blob = Blob(*shape)
        except SizeLimitError as exc:
            exc.subject = f"parameter blob {len(self)}"
            raise
        self.append(blob)
        return blob


class Layer:
    """Base class of every layer, built-in or user-defined (pycaffe's ``caffe.Layer``)."""

    type: str = ""
    exact_num_bottom_blobs: int = -1
    min_bottom_blobs: int = -1
    max_bottom_blobs: int = -1
    exact_num_top_blobs: int = -1
    min_top_blobs: int = -1
    max_top_blobs: int = -1
    equal_num_bottom_top_blobs: bool = False
    auto_top_blobs: bool = False
    #: Whether Net's force_backward may ask for the gradient of bottom ``i``.
    allow_force_backward_bottoms: bool = True
    #: In GPU mode, whether this layer computes on device arrays (``blob.data`` is then
    #: the device array and ``self.xp`` the device's module). Built-in layers do; a
    #: Python layer sees numpy arrays, as in Caffe, unless its class sets this True.
    device_arrays: bool = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("setup", "reshape", "forward", "backward"):
            method = vars(cls).get(name)
            if method is not None and not hasattr(method, "_runs_where_its_blobs_are"):
                setattr(cls, name, _where_its_blobs_are(method))

    def scope_device(self, blob_lists):
        """The device module this layer computes with for these blobs (None: numpy)."""
        if not self.device_arrays:
            return None
        for blobs in blob_lists:
            if isinstance(blobs, list):
                for blob in blobs:
                    if isinstance(blob, Blob) and blob.device is not None:
                        return blob.device
        for blob in self.blobs:
            if blob.device is not None:
                return blob.device
        return None

    def __init__(self, layer_param=None, phase: int | None = None):
        from caffelite.proto import caffe_pb2

        self.layer_param = layer_param if layer_param is not None else caffe_pb2.LayerParameter()
        self.phase = phase if phase is not None else self.layer_param.phase
        #: Whether a backward follows each forward (TRAIN, or a Net with force_backward):
        #: a layer may then keep from its forward what its backward reuses.
        self.backward_follows = self.phase == TRAIN
        self.blobs = BlobVec()
        self.param_propagate_down: list[bool] = []
        self.loss_weights: list[float] = []
        self._blobs_loaded = False
        if self.layer_param.blobs:
            self.blobs.extend(_blob_from_proto(p) for p in self.layer_param.blobs)
            self._blobs_loaded = True

    # ---- the contract --------------------------------------------------------
    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Read parameters and create ``self.blobs``; the default has none."""

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError(f"layer type {self.type!r} does not implement reshape")

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError(f"layer type {self.type!r} does not implement forward")

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        """The default is for layers without gradients (data, accuracy)."""

    # ---- conveniences ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.layer_param.name

    @property
    def xp(self):
        return backend.xp()

    @property
    def param_str(self) -> str:
        return self.layer_param.python_param.param_str

    def allow_force_backward(self, bottom_index: int) -> bool:
        return self.allow_force_backward_bottoms

    def blobs_need_setup(self) -> bool:
        """False when weights came with the layer (``blobs`` in the NetParameter)."""
        return not self._blobs_loaded

    def make_param_blobs(self, specs, hint: str = "") -> None:
        """Create and fill ``self.blobs`` from ``(name, shape, filler)`` specs (a None
        filler leaves zeros); when weights came with the layer, check their shapes instead.
        """
        if self.blobs_need_setup():
            from caffelite.fillers import fill

            for _, shape, filler in specs:
                blob = self.blobs.add_blob(*shape)
                if filler is not None:
                    fill(blob, filler)
            return
        names = ", ".join(name for name, _, _ in specs)
        if len(self.blobs) != len(specs):
            raise self.error(
                f"expected {len(specs)} parameter blob(s) ({names}){hint}, got {len(self.blobs)}"
            )
        for (name, shape, _), blob in zip(specs, self.blobs, strict=True):
            if not shapes_match(blob.shape, tuple(shape)):
                raise self.error(
                    f"loaded {name} blob has shape {blob.shape}, expected {tuple(shape)}{hint}"
                )
            blob.reshape(shape)  # a legacy (1, 1, N, K) weight becomes (N, K)

    def error(self, message: str) -> CaffeliteError:
        """An error that names this layer, to ``raise`` where the fact is known."""
        return CaffeliteError(f"layer {self.name!r} (type {self.type}): {message}")

    # ---- what the Net calls --------------------------------------------------
    def setup_layer(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Caffe's Layer::SetUp: check blob counts, setup, reshape, loss weights."""
        self._check_blob_counts(bottom, top)
        self.setup(bottom, top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [True] * len(self.blobs)
        self.reshape(bottom, top)
        self._set_loss_weights(top)

    def _check_blob_counts(self, bottom: list[Blob], top: list[Blob]) -> None:
        def check(kind: str, n: int, exact: int, lo: int, hi: int) -> None:
            if exact >= 0 and n != exact:
                raise self.error(f"takes exactly {exact} {kind} blob(s), got {n}")
            if lo >= 0 and n < lo:
                raise self.error(f"takes at least {lo} {kind} blob(s), got {n}")
            if hi >= 0 and n > hi:
                raise self.error(f"takes at most {hi} {kind} blob(s), got {n}")

        check(
            "bottom",
            len(bottom),
            self.exact_num_bottom_blobs,
            self.min_bottom_blobs,
            self.max_bottom_blobs,
        )
        check("top", len(top), self.exact_num_top_blobs, self.min_top_blobs, self.max_top_blobs)
        if self.equal_num_bottom_top_blobs and len(bottom) != len(top):
            raise self.error(f"needs as many tops as bottoms, got {len(bottom)} and {len(top)}")

    def _set_loss_weights(self, top: list[Blob]) -> None:
        weights = list(self.layer_param.loss_weight)
        if weights and len(weights) != len(top):
            raise self.error(f"has {len(weights)} loss_weight values for {len(top)} tops")
        if not weights:
            weights = [self.default_loss_weight(i) for i in range(len(top))]
        self.loss_weights = weights
        self._loss_top_shapes: dict[int, tuple] = {}
        self.refresh_loss_diffs(top)

    def refresh_loss_diffs(self, top: list[Blob]) -> None:
        """Caffe's SetLossWeights: a loss top's diff holds its loss weight, written once;
        backward reads whatever the diff holds (pycaffe may overwrite it, e.g. with 0 to
        switch a loss off). Only a loss top whose shape changed gets its weight again
        (where Caffe would leave stale or zeroed memory)."""
        for j, weight in enumerate(self.loss_weights):
            if weight and self._loss_top_shapes.get(j) != top[j].shape:
                with backend.device_scope(self.scope_device([top])):  # written where it is read
                    top[j].diff[...] = weight
                self._loss_top_shapes[j] = top[j].shape

    def default_loss_weight(self, top_index: int) -> float:
        """Loss layers override this: 1 for their first top (Caffe's LossLayer)."""
        return 0.0


def _where_its_blobs_are(method):
    """``method`` run in the device scope of the blobs it is given (see the module doc)."""

    @functools.wraps(method)
    def run(self, *blob_lists):
        device = self.scope_device(blob_lists)
        if backend.current_scope() is device:
            return method(self, *blob_lists)
        with backend.device_scope(device):
            return method(self, *blob_lists)

    run._runs_where_its_blobs_are = True
    return run


def _blob_from_proto(proto) -> Blob:
    blob = Blob()
    blob.from_proto(proto)
    return blob


# ---- the registry --------------------------------------------------------------
_REGISTRY: dict[str, type[Layer]] = {}


def register_layer(type_name: str):
    """Class decorator: make ``type_name`` usable as a prototxt layer ``type``."""

    def decorate(cls: type[Layer]) -> type[Layer]:
        if type_name in _REGISTRY:
            raise CaffeliteError(
                f"layer type {type_name!r} is already registered "
                f"(by {_REGISTRY[type_name].__qualname__})"
            )
        cls.type = type_name
        _REGISTRY[type_name] = cls
        return cls

    return decorate


def layer_type_list() -> list[str]:
    """The registered layer types, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    _load_builtin_layers()
    return sorted(_REGISTRY)


def create_layer(layer_param, phase: int | None = None) -> Layer:
    """Instantiate the layer class registered for ``layer_param.type``."""
    _load_builtin_layers()
    cls = _REGISTRY.get(layer_param.type)
    if cls is None:
        raise CaffeliteError(
            f"unknown layer type {layer_param.type!r} (layer {layer_param.name!r}); "
            f"known types: {', '.join(sorted(_REGISTRY))}"
        )
    return cls(layer_param, phase)


def _load_builtin_layers() -> None:
    import caffelite.layers  # noqa: F401  (registers the built-in layers on import)
