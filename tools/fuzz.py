"""Run the loader fuzz targets for a long time: tests/fuzz_targets.py, with hypothesis.

    python tools/fuzz.py [--seconds 300] [--hang 10] [target ...]

Each target (all by default; see ``--list``) is fed hypothesis-generated mutants of
its seed file for ``--seconds``, in rounds of fresh random seeds. The property:
every input loads or raises CaffeliteError, within the memory bound of
fuzz_targets.check_target. An input running longer than ``--hang`` seconds is a
hang: the process prints every thread's stack and exits with status 3. A
violation is shrunk by hypothesis, printed with its minimal input, and the run
goes on with the next target. Prints executions per target; exit status 1 if
anything was found.
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_targets  # noqa: E402


def fuzz(name: str, seconds: float, hang: float) -> tuple[int, dict, list[str]]:
    """(executions, outcome counts, violations) of ``seconds`` of fuzzing ``name``."""
    from hypothesis import HealthCheck, given, settings

    target, seed, text = fuzz_targets.TARGETS[name]
    strategy = fuzz_targets.mutants(seed(), text)
    counts = {"ok": 0, "error": 0}
    found: list[str] = []

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(strategy)
    def round_(payload):
        faulthandler.dump_traceback_later(hang, exit=True)
        try:
            counts[fuzz_targets.check_target(target, payload)] += 1
        finally:
            faulthandler.cancel_dump_traceback_later()

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            round_()
        except fuzz_targets.PropertyViolation as exc:
            found.append(str(exc))
            break
        finally:
            fuzz_targets.cleanup_scratch()
    return counts["ok"] + counts["error"], counts, found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--seconds", type=float, default=300.0, help="per target")
    parser.add_argument("--hang", type=float, default=10.0, help="seconds one input may take")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(fuzz_targets.TARGETS)))
        return 0
    names = args.targets or sorted(fuzz_targets.TARGETS)
    unknown = set(names) - set(fuzz_targets.TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    total, anything = 0, False
    print("| target | executions | loaded | CaffeliteError | violations |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in names:
        executions, counts, found = fuzz(name, args.seconds, args.hang)
        total += executions
        anything |= bool(found)
        shown = "; ".join(f[:300] for f in found) or "none"
        print(
            f"| {name} | {executions} | {counts['ok']} | {counts['error']} | {shown} |", flush=True
        )
    print(f"{total} executions in all")
    return 1 if anything else 0


if __name__ == "__main__":
    sys.exit(main())
