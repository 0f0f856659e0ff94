"""Draw a NetParameter as a Graphviz graph (pycaffe's ``caffe.draw``); pydot optional.

Layers are boxes labelled with name, type and key geometry (coloured by type, in-place
neuron layers green); blobs are grey octagons; edges run bottom blob -> layer -> top
blob, the top edges labelled with the batch size or number of outputs. The DOT text
is built here; images (png, svg, pdf...) come from Graphviz's ``dot`` program, and
``get_pydot_graph`` hands the same graph to pydot for code that wants pycaffe's object.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

LAYER_STYLE = {"shape": "record", "style": "filled", "fillcolor": "#6495ED"}
NEURON_LAYER_STYLE = {"shape": "record", "style": "filled", "fillcolor": "#90EE90"}
BLOB_STYLE = {"shape": "octagon", "style": "filled", "fillcolor": "#E0E0E0"}
_TYPE_COLORS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF5050",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
}
TEXT_FORMATS = ("dot", "gv", "raw")


def choose_color_by_layertype(layer_type: str) -> str:
    return _TYPE_COLORS.get(layer_type, LAYER_STYLE["fillcolor"])


def _escape(text: str, record: bool = False) -> str:
    """Text for a double-quoted DOT string; record labels also escape their field syntax."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    if record:
        for char in "{}|<>":
            text = text.replace(char, "\\" + char)
    return text


def get_layer_lr_mult(layer) -> tuple[float, float]:
    """The weight and bias learning-rate multipliers (1 where not given)."""
    lr = [spec.lr_mult if spec.HasField("lr_mult") else 1.0 for spec in layer.param[:2]]
    lr += [1.0] * (2 - len(lr))
    return lr[0], lr[1]


def get_layer_label(layer, rankdir: str = "LR", display_lrm: bool = False) -> str:
    """The DOT-escaped label: name, (type), geometry of spatial layers, lr multipliers.

    Lines are separated by newlines when the graph runs left-right and by spaces when
    it runs vertically, where width is free and height is not.
    """
    separator = " " if rankdir in ("TB", "BT") else "\\n"
    parts = [_escape(layer.name, record=True)]
    if layer.type == "Pooling":
        pool = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        parts.append(_escape(f"({layer.type} {pool})", record=True))
    else:
        parts.append(_escape(f"({layer.type})", record=True))
    geometry = _spatial_geometry(layer)
    if geometry is not None:
        kernel, stride, pad = geometry
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        weight_lr, bias_lr = get_layer_lr_mult(layer)
        if weight_lr or bias_lr:
            parts.append(f"lr mult: {weight_lr:.1f}, {bias_lr:.1f}")
    return separator.join(parts)


def _spatial_geometry(layer):
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel = f"{p.kernel_h}x{p.kernel_w}" if p.HasField("kernel_h") else p.kernel_size
        return kernel, p.stride, p.pad
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = p.kernel_size[0] if len(p.kernel_size) else 1
        stride = p.stride[0] if len(p.stride) else 1
        pad = p.pad[0] if len(p.pad) else 0
        return kernel, stride, pad
    return None


def get_edge_label(layer) -> str:
    """The label of the edges to a layer's tops: batch size or number of outputs."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def layer_in_phase(layer, phase) -> bool:
    """Whether ``layer`` belongs to ``phase`` (``None``: every layer) by its include and
    exclude rules' phases; other rule conditions (stages, levels) are not considered."""
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise CaffeliteError(f"layer {layer.name!r} specifies both include and exclude rules")
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(not r.HasField("phase") or r.phase == phase for r in layer.exclude)


def _net_graph(net_param, rankdir, label_edges, phase, display_lrm):
    """The graph as (nodes, edges): ``{node: attributes}`` and ``{(source, target):
    [edge labels]}``, every attribute value already escaped for a DOT string."""
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise CaffeliteError(f"rankdir must be one of LR, RL, TB, BT; got {rankdir!r}")
    nodes: dict[str, dict] = {}
    # One edge per (source, target); same-named layers of different phases (two "mnist"
    # Data layers) share a node, and their edge labels are joined.
    edges: dict[tuple[str, str], list[str]] = {}
    for layer in net_param.layer:
        if not layer_in_phase(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        in_place = (
            len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        )
        style = dict(NEURON_LAYER_STYLE if in_place else LAYER_STYLE)
        if not in_place:
            style["fillcolor"] = choose_color_by_layertype(layer.type)
        nodes[node] = {**style, "label": get_layer_label(layer, rankdir, display_lrm)}
        for blob in layer.bottom:
            nodes.setdefault(f"{blob}_blob", {**BLOB_STYLE, "label": _escape(blob)})
            edges.setdefault((f"{blob}_blob", node), [])
        top_label = get_edge_label(layer) if label_edges else ""
        for blob in layer.top:
            nodes.setdefault(f"{blob}_blob", {**BLOB_STYLE, "label": _escape(blob)})
            labels = edges.setdefault((node, f"{blob}_blob"), [])
            if top_label and top_label not in labels:
                labels.append(top_label)
    return nodes, edges


def _edge_label(labels: list[str]) -> str:
    return _escape(" / ".join(labels))


def get_dot_graph(
    net_param, rankdir: str = "LR", label_edges: bool = True, phase=None, display_lrm=False
) -> str:
    """The DOT text of ``net_param`` (a NetParameter) laid out in direction ``rankdir``."""
    nodes, edges = _net_graph(net_param, rankdir, label_edges, phase, display_lrm)
    lines = [f'digraph "{_escape(net_param.name or "Net")}" {{', f"  rankdir={rankdir};"]
    for name, attributes in nodes.items():
        listed = ", ".join(f'{key}="{value}"' for key, value in attributes.items())
        lines.append(f'  "{_escape(name)}" [{listed}];')
    for (source, target), labels in edges.items():
        extra = f' [label="{_edge_label(labels)}"]' if labels else ""
        lines.append(f'  "{_escape(source)}" -> "{_escape(target)}"{extra};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def get_pydot_graph(
    caffe_net, rankdir: str = "LR", label_edges: bool = True, phase=None, display_lrm=False
):
    """The same graph as a ``pydot.Dot``, as pycaffe returns it (needs pydot:
    ``pip install 'caffelite[draw]'``)."""
    try:
        import pydot
    except ImportError:
        raise CaffeliteError(
            "get_pydot_graph needs pydot (pip install 'caffelite[draw]'); get_dot_graph "
            "gives the same graph as DOT text without it"
        ) from None

    def quoted(text: str) -> str:  # pydot keeps a quoted value as it is
        return f'"{text}"'

    nodes, edges = _net_graph(caffe_net, rankdir, label_edges, phase, display_lrm)
    graph = pydot.Dot(quoted(_escape(caffe_net.name or "Net")), graph_type="digraph")
    graph.set_rankdir(rankdir)
    for name, attributes in nodes.items():
        values = {key: quoted(value) for key, value in attributes.items()}
        graph.add_node(pydot.Node(quoted(_escape(name)), **values))
    for (source, target), labels in edges.items():
        extra = {"label": quoted(_edge_label(labels))} if labels else {}
        graph.add_edge(pydot.Edge(quoted(_escape(source)), quoted(_escape(target)), **extra))
    return graph


def graphviz_available() -> bool:
    """Whether Graphviz's ``dot`` program is on the PATH (needed for images)."""
    return shutil.which("dot") is not None


def render_dot(dot_text: str, fmt: str) -> bytes:
    """Run Graphviz ``dot -T<fmt>`` on ``dot_text``; a clear error when it is missing."""
    program = shutil.which("dot")
    if program is None:
        raise CaffeliteError(
            f"cannot render {fmt.upper()}: Graphviz's 'dot' program is not installed "
            "(e.g. apt-get install graphviz); write a .dot file instead and render it later"
        )
    result = subprocess.run(
        [program, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, check=False
    )
    if result.returncode:
        raise CaffeliteError(f"dot -T{fmt} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def draw_net(net_param, rankdir: str = "LR", ext: str = "png", phase=None, display_lrm=False):
    """The drawing as bytes in format ``ext`` (DOT text for dot/gv/raw)."""
    dot_text = get_dot_graph(net_param, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in TEXT_FORMATS:
        return dot_text.encode()
    return render_dot(dot_text, ext)


def draw_net_to_file(
    net_param, filename, rankdir: str = "LR", phase=None, display_lrm: bool = False
) -> None:
    """Write the drawing in the format of ``filename``'s extension (.dot/.gv/.raw: DOT)."""
    filename = os.fspath(filename)
    ext = os.path.splitext(filename)[1].lstrip(".").lower() or "dot"
    payload = draw_net(net_param, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as handle:
        handle.write(payload)
