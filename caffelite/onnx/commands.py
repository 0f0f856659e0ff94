"""The ``caffelite export`` and ``caffelite import-onnx`` subcommands."""

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
    imp = commands.add_parser("import-onnx", help="turn an ONNX model into prototxt + caffemodel")
    imp.add_argument("onnx_model", help="the .onnx file to read")
    for name, what in (("model", "the net prototxt"), ("weights", "the .caffemodel")):
        imp.add_argument(
            f"--output-{name}",
            f"--output_{name}",
            f"-output_{name}",
            dest=f"output_{name}",
            required=True,
            help=f"{what} to write",
        )
    add(imp, "batch", type=int, default=1, help="batch size for a symbolic batch axis")


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


def run_import(args) -> int:
    from caffelite.onnx.importer import import_file

    import_file(args.onnx_model, args.output_model, args.output_weights, batch=args.batch)
    print(f"wrote {args.output_model} and {args.output_weights}")
    return 0


HANDLERS = {"export": run_export, "import-onnx": run_import}
