#!/usr/bin/env python3
"""Tables and plots of Caffe-format training logs (Caffe's parse_log.py and
plot_training_log.py).

    python tools/plot_training_log.py LOG [LOG ...] [-o OUT.png] [--csv DIR] [--chart N]
    python tools/plot_training_log.py CHART_TYPE OUT.png LOG [LOG ...]   (Caffe's form)

Without -o and --csv, writes LOG.train and LOG.test (CSV) next to the log and, when
matplotlib is installed, LOG.png with the loss and accuracy curves. Chart types:
0/1 test accuracy, 2/3 test loss, 4/5 learning rate, 6/7 training loss, against
iterations (even) or seconds (odd). CSV output never needs matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelite import training_log
from caffelite.errors import CaffeliteError


def _caffe_form(argv) -> list[str] | None:
    """Rewrite Caffe's ``CHART_TYPE OUT.png LOG...`` arguments to ours."""
    if len(argv) >= 3 and argv[0].isdigit():
        return ["--chart", argv[0], "-o", argv[1], *argv[2:]]
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _caffe_form(argv) or argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logs", nargs="+", metavar="LOG", help="training log file(s)")
    parser.add_argument("-o", "--output", help="the PNG to write")
    parser.add_argument("--csv", metavar="DIR", help="write LOG.train and LOG.test CSVs in DIR")
    parser.add_argument("--chart", type=int, help="one of Caffe's chart types 0-7")
    parser.add_argument("--delimiter", default=",", help="CSV column delimiter (,)")
    args = parser.parse_args(argv)
    try:
        logs = {path: training_log.read_log(path) for path in args.logs}
        for path, log in logs.items():
            print(f"{path}: {len(log.train)} training rows, {len(log.test)} test rows")
        default = args.output is None and args.csv is None
        if args.csv is not None or (default and args.chart is None):
            for path, log in logs.items():
                folder = args.csv if args.csv is not None else os.path.dirname(path) or "."
                for written in training_log.save_csv_files(path, folder, log, args.delimiter):
                    print(f"wrote {written}")
        if args.chart is not None:
            output = args.output or os.path.splitext(args.logs[0])[0] + f".chart{args.chart}.png"
            training_log.plot_chart(logs, args.chart, output)
            print(f"wrote {output}")
        elif args.output is not None or default:
            if len(logs) > 1 and args.output is not None:
                raise CaffeliteError("-o with several logs needs --chart N (one line per log)")
            if args.output is None and not training_log.matplotlib_available():
                print(
                    "plot_training_log: no plot: matplotlib is not installed "
                    "(pip install matplotlib)",
                    file=sys.stderr,
                )
                return 0
            for path, log in logs.items():
                output = args.output or os.path.splitext(path)[0] + ".png"
                training_log.plot_summary(log, output, title=os.path.basename(path))
                print(f"wrote {output}")
    except CaffeliteError as exc:
        print(f"plot_training_log: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"plot_training_log: cannot write {exc.filename or 'the output'}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
