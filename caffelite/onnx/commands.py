"""The ``caffelite export`` subcommand."""

from __future__ import annotations

from caffelite.onnx.graph import DEFAULT_OPSET


def add_parsers(commands, add) -> None:
    """Add the subcommands to the ``caffelite`` parser (``add`` spells Caffe-style flags)."""
    export = commands.add_parser("export", help="write a deploy net and its weights as ONNX")
    add(export, "model", required=True, help="deploy prototxt (with an Input layer)")
    add(export, "weights", help=".caffemodel (default: the net's own fillers)")
    add(export, "output", required=True, help="the .onnx file to write")
    add(export, "opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (13 or newer)")
    add(
        export,
        "static_batch",
        action="store_true",
        help="keep the prototxt's batch size instead of a symbolic batch axis N",
    )


def run_export(args) -> int:
    from caffelite.onnx.export import export_file

    export_file(
        args.model,
        args.weights,
        args.output,
        opset=args.opset,
        dynamic_batch=not args.static_batch,
    )
    print(f"wrote {args.output}")
    return 0


HANDLERS = {"export": run_export}
