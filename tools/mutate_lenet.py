"""Issue 14's experiment: LeNet prototxts with numeric fields set to odd values.

    python tools/mutate_lenet.py [--cases 300] [--timeout 20] [--memory 6G] [--seed 0]

Every ``field: number`` of models/lenet/lenet_train_test.prototxt (reading a small
random LMDB) is set, in turn, to each of 0, -1, 2^20, 2^31-1, nan and inf; random
pairs of such changes fill up to ``--cases``. Each mutant is built as a TRAIN net
and run forward and backward in a worker process with an address-space limit of
``--memory`` (so an absurd size cannot take the shared machine's memory) and a
``--timeout``. Outcomes: ran, CaffeliteError (a clear error), or not clear: any
other exception, a timeout, or a crashed worker. Prints the counts and every
not-clear case; the exit status is 1 if there was one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_targets  # noqa: E402


def make_cases(text: str, count: int, seed: int) -> list[dict[int, str]]:
    """All single changes, then random pairs up to ``count`` (or a sample of the
    singles when ``count`` is smaller)."""
    spans = len(fuzz_targets.numeric_spans(text))
    singles = [{i: v} for i in range(spans) for v in fuzz_targets.ODD_VALUES]
    rng = random.Random(seed)
    if count <= len(singles):
        return rng.sample(singles, count)
    cases = list(singles)
    while len(cases) < count:
        i, j = rng.sample(range(spans), 2)
        cases.append(
            {i: rng.choice(fuzz_targets.ODD_VALUES), j: rng.choice(fuzz_targets.ODD_VALUES)}
        )
    return cases


def _worker(connection, memory: int, directory: str) -> None:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from caffelite.errors import CaffeliteError

    while True:
        text = connection.recv()
        if text is None:
            return
        try:
            fuzz_targets.run_net_text(text, Path(directory))
            result = ("ran", "")
        except CaffeliteError as exc:
            result = ("CaffeliteError", str(exc).splitlines()[0][:300])
        except BaseException as exc:  # the point is to see them
            result = (type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
        connection.send(result)


class _Runner:
    """One worker process, replaced after a timeout or a crash."""

    def __init__(self, memory: int, directory: str):
        self.memory, self.directory = memory, directory
        self.context = multiprocessing.get_context("spawn")
        self.process = None

    def run(self, text: str, timeout: float) -> tuple[str, str, float]:
        if self.process is None or not self.process.is_alive():
            self.connection, child = self.context.Pipe()
            self.process = self.context.Process(
                target=_worker, args=(child, self.memory, self.directory), daemon=True
            )
            self.process.start()
        started = time.perf_counter()
        self.connection.send(text)
        if self.connection.poll(timeout):
            try:
                kind, message = self.connection.recv()
            except EOFError:
                kind, message = "crash", f"worker exit code {self.process.exitcode}"
                self.process = None
        else:
            self.process.kill()
            self.process.join()
            self.process = None
            kind, message = "timeout", f"over {timeout:g} s"
        return kind, message, time.perf_counter() - started

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.connection.send(None)
            self.process.join(5)


def main(argv=None) -> int:
    from caffelite.limits import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--memory", default="6G", help="address-space limit per worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="caffelite-mutate-"))
    text = fuzz_targets.lenet_train_text(fuzz_targets.make_lmdb(directory))
    cases = make_cases(text, args.cases, args.seed)
    runner = _Runner(parse_size(args.memory), str(directory))
    counts: Counter = Counter()
    unclear = []
    slowest = 0.0
    try:
        for changes in cases:
            kind, message, seconds = runner.run(
                fuzz_targets.set_numbers(text, changes), args.timeout
            )
            slowest = max(slowest, seconds)
            counts[kind] += 1
            if kind not in ("ran", "CaffeliteError"):
                unclear.append((changes, kind, message, seconds))
    finally:
        runner.close()
    spans = fuzz_targets.numeric_spans(text)
    print(f"{len(cases)} mutants of lenet_train_test.prototxt ({len(spans)} numeric fields)")
    for kind, n in counts.most_common():
        print(f"  {kind:16s} {n}")
    print(f"  not clear        {len(unclear)}   (slowest case {slowest:.1f} s)")
    for changes, kind, message, seconds in unclear:
        fields = ", ".join(f"{_field(text, spans[i])} -> {v}" for i, v in changes.items())
        print(f"- [{kind}, {seconds:.1f} s] {fields}: {message}")
    return 1 if unclear else 0


def _field(text: str, span: tuple[int, int]) -> str:
    """``'field: 5' (line 12)`` for the number at ``span``."""
    start, end = span
    line_start = text.rfind("\n", 0, start) + 1
    name = text[line_start:start].rsplit("{", 1)[-1].strip().rstrip(":").split()[-1]
    return f"{name}={text[start:end]} (line {text.count(chr(10), 0, start) + 1})"


if __name__ == "__main__":
    sys.exit(main())
