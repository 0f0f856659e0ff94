"""Regenerate ``caffelite/proto/caffe_pb2.py`` from ``proto/caffe.proto``.

The generated module is committed so that caffelite imports with nothing but
the protobuf runtime installed.  That copy must stay in step with the schema,
so this tool rebuilds it with the protoc bundled in ``grpcio-tools``, and
``--check`` (run by the test suite) fails when the committed copy is stale.

Usage::

    python tools/gen_proto.py           # rewrite caffelite/proto/caffe_pb2.py
    python tools/gen_proto.py --check   # exit 1 if it differs from a fresh build
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_FILE = REPO_ROOT / "proto" / "caffe.proto"
OUTPUT_FILE = REPO_ROOT / "caffelite" / "proto" / "caffe_pb2.py"


class ProtocError(RuntimeError):
    """protoc rejected the schema or could not write its output."""


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_protoc(proto_file: Path, out_dir: Path) -> Path:
    """Compile ``proto_file`` into ``out_dir`` and return the ``*_pb2.py`` path.

    The schema's own directory is the only import root, so the descriptor is
    registered as plain ``caffe.proto`` (as in Caffe's pycaffe) and the output
    does not depend on where the repository is checked out.
    """
    # Imported here so that merely importing this module (e.g. from the
    # tests) does not require grpcio-tools.
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_file.parent}",
        f"--python_out={out_dir}",
        str(proto_file),
    ]
    status = protoc.main(args)
    if status != 0:
        raise ProtocError(f"protoc failed (exit status {status}) on {proto_file}")
    generated = out_dir / f"{proto_file.stem}_pb2.py"
    if not generated.is_file():
        raise ProtocError(f"protoc reported success but wrote no {generated.name}")
    return generated


def build(proto_file: Path = PROTO_FILE) -> bytes:
    """Return the freshly generated module's bytes, built in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        return run_protoc(proto_file, Path(tmp)).read_bytes()


def write(proto_file: Path = PROTO_FILE, output: Path = OUTPUT_FILE) -> bool:
    """Regenerate ``output``; return True if its contents changed."""
    fresh = build(proto_file)
    if output.is_file() and output.read_bytes() == fresh:
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(fresh)
    return True


def stale_reason(proto_file: Path = PROTO_FILE, output: Path = OUTPUT_FILE) -> str | None:
    """Explain why ``output`` is out of date, or return None if it is current."""
    if not output.is_file():
        return f"{_display(output)} is missing"
    if output.read_bytes() != build(proto_file):
        return f"{_display(output)} does not match a fresh build of {_display(proto_file)}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Regenerate {_display(OUTPUT_FILE)} from {_display(PROTO_FILE)}."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write anything; exit 1 if the committed module is stale",
    )
    args = parser.parse_args(argv)

    try:
        if args.check:
            reason = stale_reason()
            if reason is not None:
                print(
                    f"stale generated code: {reason}.\n"
                    "Run `python tools/gen_proto.py` and commit the result.",
                    file=sys.stderr,
                )
                return 1
            print(f"{_display(OUTPUT_FILE)} is up to date")
            return 0
        changed = write()
    except ProtocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'wrote' if changed else 'unchanged:'} {_display(OUTPUT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
