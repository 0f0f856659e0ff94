#!/usr/bin/env python3
"""Draw a net prototxt as a graph (Caffe's python/draw_net.py).

    python tools/draw_net.py NET.prototxt OUT.png [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]

The format follows OUT's extension: .dot/.gv/.raw write Graphviz DOT text (always
possible); .png/.svg/.pdf/... need Graphviz's ``dot`` program. Without it, the DOT
text is written next to OUT (OUT with a .dot extension) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite import draw
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_text
from caffelite.upgrade import upgrade_net


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input_net_proto_file", help="the net prototxt")
    parser.add_argument("output_image_file", help="the output file: .png, .svg, .pdf, .dot ...")
    parser.add_argument(
        "--rankdir",
        default="LR",
        choices=("LR", "RL", "TB", "BT"),
        help="direction of the graph layout (LR)",
    )
    parser.add_argument(
        "--phase",
        default="ALL",
        choices=("TRAIN", "TEST", "ALL"),
        help="draw only the layers of this phase (ALL)",
    )
    parser.add_argument(
        "--display_lrm",
        action="store_true",
        help="show the learning-rate multipliers of learning layers",
    )
    args = parser.parse_args(argv)
    phase = None if args.phase == "ALL" else caffe_pb2.Phase.Value(args.phase)
    out = args.output_image_file
    try:
        net = read_text(args.input_net_proto_file, caffe_pb2.NetParameter())
        upgrade_net(net, args.input_net_proto_file)
        ext = os.path.splitext(out)[1].lstrip(".").lower() or "dot"
        if ext in draw.TEXT_FORMATS or draw.graphviz_available():
            print(f"Drawing net to {out}")
            draw.draw_net_to_file(net, out, args.rankdir, phase, args.display_lrm)
            return 0
        fallback = os.path.splitext(out)[0] + ".dot"
        draw.draw_net_to_file(net, fallback, args.rankdir, phase, args.display_lrm)
    except CaffeliteError as exc:
        print(f"draw_net: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"draw_net: cannot write {exc.filename or 'the output'}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    print(
        f"draw_net: Graphviz's 'dot' program is not installed, so {out} was not made.\n"
        f"Wrote the graph as DOT text to {fallback}; install Graphviz and run:\n"
        f"  dot -T{ext} {fallback} -o {out}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
