"""SignalHandler: SIGINT stops (after a snapshot), SIGHUP snapshots and goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import solver_nets as sn

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_binary
from caffelite.signal_handler import SignalHandler, SolverAction, parse_action
from caffelite.solvers import SGDSolver

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

needs_sighup = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")


def test_actions_and_defaults():
    handler = SignalHandler()
    assert (handler.sigint_action, handler.sighup_action) == ("stop", "snapshot")
    assert parse_action(" Snapshot ") == SolverAction.SNAPSHOT
    with pytest.raises(
        CaffeliteError,
        match=r"unknown signal action 'quit'; choose one of: "
        r"none, stop, snapshot",
    ):
        SignalHandler(sigint_action="quit")
    assert handler.get_requested_action() == "none"


@needs_sighup
def test_install_and_restore_previous_handlers():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGHUP, mine)
    try:
        before_int = signal.getsignal(signal.SIGINT)
        with SignalHandler() as handler:
            assert handler.installed
            assert signal.getsignal(signal.SIGHUP) == handler._handle
            assert signal.getsignal(signal.SIGINT) == handler._handle
            with pytest.raises(CaffeliteError, match="already installed"):
                handler.install()
        assert not handler.installed
        assert signal.getsignal(signal.SIGHUP) is mine
        assert signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_install_outside_main_thread_is_a_clear_error():
    errors = []

    def run():
        try:
            SignalHandler().install()
        except CaffeliteError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in errors[0]


@needs_sighup
def test_sighup_reported_once():
    with SignalHandler() as handler:
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.get_requested_action() == "snapshot"
        assert handler.get_requested_action() == "none"


@needs_sighup
def test_pending_signals_come_in_caffe_order():
    with SignalHandler(sigint_action="snapshot", sighup_action="stop") as handler:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.get_requested_action() == "stop"  # SIGHUP's, first
        assert handler.get_requested_action() == "snapshot"  # then SIGINT's
        assert handler.get_requested_action() == "none"


def test_second_sigint_while_stopping_interrupts():
    with SignalHandler() as handler:
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.get_requested_action() == "stop"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass


def test_sigint_ignored_with_action_none():
    with SignalHandler(sigint_action="none") as handler:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.get_requested_action() == "none"


@needs_sighup
def test_sigterm_asks_to_stop_once_and_a_second_changes_nothing():
    with SignalHandler() as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.get_requested_action() == SolverAction.STOP
        assert handler.get_requested_action() == SolverAction.NONE
    with SignalHandler(sigterm_action="snapshot") as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.get_requested_action() == SolverAction.SNAPSHOT


def test_sighup_snapshots_and_training_continues(tmp_path):
    solver = sn.make_solver(SGDSolver, f"snapshot_prefix: '{tmp_path}/lsq'")

    class HangUpAtTwo:
        def on_start(self):
            if solver.iter == 2:
                os.kill(os.getpid(), signal.SIGHUP)

        def on_gradients_ready(self):
            pass

    solver.add_callback(HangUpAtTwo())
    with SignalHandler() as handler:
        solver.set_action_function(handler.get_requested_action)
        solver.step(5)
    assert solver.iter == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lsq_iter_3.caffemodel",
        "lsq_iter_3.solverstate",
    ]


SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import solver_nets as sn
    from caffelite.logging_setup import configure
    from caffelite.signal_handler import SignalHandler
    from caffelite.solvers import SGDSolver

    configure()
    solver = sn.make_solver(SGDSolver, "momentum: 0.9 max_iter: 100000000 "
                                       "snapshot_prefix: {prefix!r}")

    class Marker:
        def on_start(self):
            if solver.iter == 3:
                print("TRAINING STARTED", flush=True)

        def on_gradients_ready(self):
            pass

    solver.add_callback(Marker())
    with SignalHandler() as signals:
        solver.set_action_function(signals.get_requested_action)
        solver.solve()
    print("EXITED CLEANLY AT", solver.iter, flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_snapshots_and_exits_cleanly(tmp_path, signum):
    """SIGTERM (a cluster scheduler's notice before it kills the job) stops like SIGINT."""
    prefix = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(TESTS), prefix=str(prefix)))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("TRAINING STARTED"):
                break
        else:
            pytest.fail("training never started:\n" + "".join(seen))
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "Optimization stopped early." in output
    stopped_at = int(output.split("EXITED CLEANLY AT ")[1].split()[0])
    assert stopped_at >= 4
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run_"))
    assert names == [f"run_iter_{stopped_at}.caffemodel", f"run_iter_{stopped_at}.solverstate"]
    state = read_binary(tmp_path / names[1], caffe_pb2.SolverState())
    assert state.iter == stopped_at
    assert Path(state.learned_net) == tmp_path / names[0]
