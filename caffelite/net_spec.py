"""NetSpec: write a net in Python and get its NetParameter (pycaffe's ``caffe.net_spec``).

``layers.Convolution(bottom, kernel_size=5, ...)`` records a layer and returns its
top(s); assigning a top to a ``NetSpec`` attribute names it. ``NetSpec.to_proto()``
walks the recorded graph and produces the ``LayerParameter`` list, naming every
layer after its first top and every unnamed top ``<Type><n>``, as Caffe does.

Keyword arguments become fields: a key ending in ``param`` (``param``,
``transform_param``, ``convolution_param``...) is a LayerParameter field; any other
key goes to the layer type's own parameter message when it has that field
(``num_output`` -> ``convolution_param.num_output``; the message is found from the
type name through the ``*_param`` fields' message names, as Caffe's
``param_name_dict`` does) and otherwise to the LayerParameter (``name``,
``include``, ``loss_weight``...). Lists fill repeated fields, dicts fill messages.
``ntop`` (default 1) and ``in_place`` are handled here and never reach the proto.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from google.protobuf.message import Message

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "param_name_dict"]


def param_name_dict() -> dict[str, str]:
    """Map a parameter message's type stem to its field stem: ``InnerProduct`` ->
    ``inner_product`` (from ``InnerProductParameter inner_product_param``)."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        message = field.message_type
        if field.name.endswith("_param") and message is not None:
            if message.name.endswith("Parameter"):
                names[message.name[: -len("Parameter")]] = field.name[: -len("_param")]
    # Layer types that read another type's message (Caffe's Deconvolution and Im2col
    # layers take convolution_param); pycaffe's NetSpec misses them.
    names.update(Deconvolution="convolution", Im2col="convolution")
    return names


_param_names = param_name_dict()


def assign_proto(proto, name: str, value) -> None:
    """Set field ``name`` of ``proto`` from a Python value, recursively.

    A list fills a repeated field (a single value is taken as a one-item list); a dict
    fills a message field key by key; a protobuf message is copied in.
    """
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError(f"{proto.DESCRIPTOR.name} has no field {name!r}")
    target = getattr(proto, name)
    if field.is_repeated:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if field.message_type is None:
            target.extend(items)
            return
        for item in items:
            _fill_message(target.add(), item, f"{proto.DESCRIPTOR.name}.{name}")
    elif field.message_type is not None:
        _fill_message(target, value, f"{proto.DESCRIPTOR.name}.{name}")
    else:
        setattr(proto, name, value)


def _fill_message(message, value, where: str) -> None:
    if isinstance(value, Message):
        message.CopyFrom(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            assign_proto(message, key, item)
    else:
        raise TypeError(
            f"{where} is a {message.DESCRIPTOR.name} message: give a dict or a message, "
            f"not {type(value).__name__} {value!r}"
        )


class NetSpecTypeError(CaffeliteError, TypeError):
    """A bottom that is not a Top: a TypeError, as pycaffe raises, and a CaffeliteError."""


class Top:
    """One output blob of a layer (``fn``), the ``n``-th of its tops."""

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params: dict) -> None:
        self.fn._update(params)

    def __repr__(self) -> str:
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """A layer: its type, its input Tops and its keyword parameters."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = bool(self.params.pop("in_place", False))
        if not isinstance(self.ntop, int) or self.ntop < 0:
            raise CaffeliteError(f"L.{type_name}: ntop must be an integer >= 0, got {self.ntop!r}")
        for i, top in enumerate(inputs):
            if not isinstance(top, Top):
                # pycaffe's exact words: code matches on them.
                raise NetSpecTypeError(f"{type_name} input {i} is not a Top (type is {type(top)})")
        self.inputs = tuple(inputs)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _update(self, params: dict) -> None:
        self.params.update(params)

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[self.type_name] += 1
            names[top] = f"{self.type_name}{autonames[self.type_name]}"
        return names[top]

    def _layer_name(self, names: dict, autonames: Counter) -> str:
        """The name given to this function, else its first top's, else ``<Type><n>``."""
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _make_layer(self, layers: dict, names: dict, autonames: Counter):
        """The LayerParameter; every input's layer is already in ``layers``."""
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(layers[top.fn].top[top.n] for top in self.inputs)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._layer_name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        return layer

    def _assign(self, layer, key: str, value) -> None:
        stem = _param_names.get(self.type_name)
        target = layer
        if not key.endswith("param") and stem is not None:
            type_param = getattr(layer, stem + "_param")
            if key in type_param.DESCRIPTOR.fields_by_name:
                target = type_param
        if key not in target.DESCRIPTOR.fields_by_name:
            places = f"{stem}_param nor LayerParameter" if stem else "LayerParameter"
            raise CaffeliteError(f"L.{self.type_name}: keyword {key!r} is not a field of {places}")
        try:
            assign_proto(target, key, value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise CaffeliteError(f"L.{self.type_name}: bad value for {key!r}: {exc}") from None


def _emit(fn: Function, layers: dict, names: dict, autonames: Counter) -> None:
    """Add ``fn`` and the layers it depends on to ``layers``, inputs first.

    An explicit stack instead of recursion, so deep nets do not hit Python's recursion
    limit; the visiting order (inputs left to right, depth first) and so the automatic
    names are the same as a recursive walk's.
    """
    stack = [(fn, False)]
    while stack:
        current, inputs_done = stack.pop()
        if current in layers:
            continue
        if inputs_done:
            layers[current] = current._make_layer(layers, names, autonames)
            continue
        stack.append((current, True))
        stack.extend((top.fn, False) for top in reversed(current.inputs) if top.fn not in layers)


def to_proto(*tops):
    """A NetParameter with every layer needed to compute ``tops`` (names automatic)."""
    layers: dict = OrderedDict()
    names: dict = {}
    autonames: Counter = Counter()
    for top in tops:
        _emit(top.fn if isinstance(top, Top) else top, layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = L.Convolution(n.data, ...)``) get those
    names; ``to_proto()`` returns the NetParameter of every layer they need."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __delattr__(self, name: str) -> None:
        del self.tops[name]

    def __setitem__(self, name: str, value) -> None:
        self.tops[name] = value

    def __getitem__(self, name: str):
        return self.tops[name]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list:
        return list(self.tops.values())

    def update(self, name: str, params: dict) -> None:
        """Add or change keyword parameters of the layer producing top ``name``."""
        self.tops[name]._update(params)

    def to_proto(self):
        names: dict = {value: name for name, value in self.tops.items()}
        autonames: Counter = Counter()
        layers: dict = OrderedDict()
        for value in self.tops.values():
            _emit(value.fn if isinstance(value, Top) else value, layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.<Type>(*bottoms, **params)``: the Top (ntop=1), a tuple of Tops (ntop>1)
    or the Function itself (ntop=0) of a new layer of that type."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("_"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms, **params):
            fn = Function(type_name, bottoms, params)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


class _ParamConstants:
    """The constants (enum values) of one ``<Name>Parameter`` message."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, constant: str):
        if constant.startswith("_"):
            raise AttributeError(constant)
        message = getattr(caffe_pb2, self._name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe.proto has no message {self._name}Parameter")
        try:
            return getattr(message, constant)
        except AttributeError:
            raise AttributeError(f"{self._name}Parameter has no constant {constant!r}") from None


class Parameters:
    """``params.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX``."""

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return _ParamConstants(name)


layers = Layers()
params = Parameters()
