"""The ``caffelite`` command: train, test and time nets, like Caffe's ``caffe`` tool.

Flags take Caffe's single-dash spelling too (``caffelite train -solver S``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from caffelite.errors import CaffeliteError
from caffelite.onnx import commands as onnx_commands

log = logging.getLogger("caffelite")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add(parser, name: str, **kwargs) -> None:
    parser.add_argument(f"--{name}", f"-{name}", **kwargs)


def _add_net_state(parser) -> None:
    """Caffe's --stage (comma-separated) and --level, which select NetState rules."""
    _add(parser, "stage", default="", help="net stages, comma-separated (e.g. deploy,fast)")
    _add(parser, "level", type=int, default=None, help="net level (default 0)")


def _stages(args) -> list[str]:
    return [stage for stage in args.stage.split(",") if stage]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caffelite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a net with a solver prototxt")
    _add(train, "solver", required=True, help="solver prototxt")
    start = train.add_mutually_exclusive_group()
    _add(start, "snapshot", help="resume from this .solverstate")
    _add(start, "weights", help="initialise from these .caffemodel files, comma-separated")
    _add_net_state(train)
    _add(
        train,
        "sigint_effect",
        default="stop",
        choices=["stop", "snapshot", "none"],
        help="on SIGINT (Ctrl-C): snapshot and stop (default), snapshot, or nothing",
    )
    _add(
        train,
        "sighup_effect",
        default="snapshot",
        choices=["stop", "snapshot", "none"],
        help="on SIGHUP: snapshot and continue (default)",
    )
    _add(
        train,
        "sigterm_effect",
        default="stop",
        choices=["stop", "snapshot", "none"],
        help="on SIGTERM (what cluster schedulers send before killing a job): snapshot and "
        "stop (default)",
    )
    _add(
        train,
        "on_nonfinite",
        default="stop",
        choices=["stop", "continue"],
        help="when the loss becomes NaN or inf: stop, naming the layer, leaving the last "
        "snapshot as it was (default); or continue, as Caffe does",
    )
    _add(
        train,
        "progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar (auto: only when stderr is a terminal)",
    )

    _add(train, "tensorboard", metavar="DIR", help="write TensorBoard event files to DIR")
    _add(
        train,
        "tensorboard_histograms",
        metavar="N",
        type=int,
        default=0,
        help="with --tensorboard: parameter and gradient histograms every N iterations",
    )

    test = commands.add_parser("test", help="score a trained net on its TEST phase")
    _add(test, "model", required=True, help="net prototxt")
    _add(test, "weights", required=True, help=".caffemodel(s) to test, comma-separated")
    _add_net_state(test)
    _add(test, "iterations", type=_positive_int, default=50, help="batches to average over")

    timer = commands.add_parser("time", help="time forward and backward per layer")
    _add(timer, "model", required=True, help="net prototxt")
    _add(timer, "iterations", type=_positive_int, default=50, help="iterations to average over")
    _add(timer, "phase", choices=["TRAIN", "TEST"], default="TRAIN")
    device_query = commands.add_parser("device_query", help="show a GPU's properties")
    for command in (train, test, timer, device_query):
        _add(
            command,
            "gpu",
            help="run in GPU mode on this device id (Caffe's -gpu; 'all' means every device; "
            "train takes solver_mode/device_id from the solver when it is not given, and "
            "trains on several ids, e.g. 0,1, as an MPI job of one rank per device)",
        )
    for command in (train, test, timer):
        _add(
            command,
            "no_python_layers",
            action="store_true",
            help="refuse nets with Python layers (which run code from the module they "
            "name): for prototxts from sources you do not trust",
        )
    onnx_commands.add_parsers(commands, _add)
    _add_net_state(timer)
    return parser


def main(argv: list[str] | None = None) -> int:
    from caffelite.logging_setup import configure

    configure()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to relaunch under MPI
    if getattr(args, "no_python_layers", False):  # train, test and time take the flag
        from caffelite.trust import set_allow_python_layers

        set_allow_python_layers(False)
    try:
        handlers = {
            "train": _train,
            "test": _test,
            "time": _time,
            "device_query": _device_query,
            **onnx_commands.HANDLERS,
        }
        return handlers[args.command](args)
    except CaffeliteError as exc:
        print(f"caffelite {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _train(args) -> int:
    from caffelite.parallel.job import DataParallelJob
    from caffelite.progress import ProgressBar
    from caffelite.signal_handler import SignalHandler
    from caffelite.solver import get_solver, load_solver_param
    from caffelite.tensorboard import tensorboard_for

    job = DataParallelJob.from_environment()  # under mpirun -np N: one rank of N
    # As Caffe's train(): --stage/--level go into train_state; --weights replaces the
    # solver's weights entries, and --snapshot drops them (the snapshot has the weights).
    param = load_solver_param(args.solver)
    if args.level is not None:
        param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args))
    if args.snapshot or args.weights:
        del param.weights[:]
    if args.weights:
        param.weights.append(args.weights)
    gpu = args.gpu
    if gpu is None and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        gpu = str(param.device_id)  # Caffe's train(): the solver's mode when -gpu is absent
    if gpu is not None and job is None and len(ids := _gpu_ids(gpu)) > 1:
        return _train_on_several_gpus(args.argv, ids)
    _use_gpu(gpu, None if job is None else job.local_rank)
    solver = get_solver(param, source=args.solver)
    solver.on_non_finite = args.on_nonfinite
    show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    show = show and (job is None or job.is_root)
    started = time.perf_counter()
    logdir = args.tensorboard if job is None or job.is_root else None  # one writer per job
    board = tensorboard_for(solver, logdir, args.tensorboard_histograms)
    with (
        board,
        SignalHandler(args.sigint_effect, args.sighup_effect, args.sigterm_effect) as signals,
    ):
        action = signals.get_requested_action
        solver.set_action_function(action if job is None else job.attach(solver, action))
        with ProgressBar(solver, enabled=show):
            solver.solve(args.snapshot)
    elapsed = time.perf_counter() - started
    log.info("Training took %.1f s", elapsed)
    for net_id, results in enumerate(getattr(solver, "test_results", []) or []):
        for name, value in (results or {}).items():
            print(f"Test net #{net_id} at iteration {solver.iter}: {name} = {_fmt(value)}")
    return 0


def _fmt(value) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


def _test(args) -> int:
    import numpy as np

    from caffelite.layer import TEST
    from caffelite.net import Net

    _use_gpu(args.gpu)
    net = Net(args.model, TEST, stages=_stages(args) or None, level=args.level or 0)
    for path in args.weights.split(","):
        if path:
            net.copy_from(path)
    totals: dict[str, np.ndarray] = {}
    loss = 0.0
    for i in range(args.iterations):
        batch_loss = net.forward_from_to()
        loss += batch_loss
        for name in net.outputs:
            values = np.asarray(net.blobs[name].data, dtype=np.float64).ravel()
            totals[name] = totals.get(name, 0) + values
            log.info("Batch %d, %s = %s", i, name, " ".join(f"{v:g}" for v in values))
    log.info("Loss: %g", loss / args.iterations)
    weights = net.blob_loss_weights
    for name, total in totals.items():
        for value in total / args.iterations:
            extra = (
                f" (* {weights[name]:g} = {weights[name] * value:g} loss)" if weights[name] else ""
            )
            log.info("%s = %g%s", name, value, extra)
            print(f"{name} = {value:.4f}{extra}")
    return 0


def _time(args) -> int:
    from caffelite.layer import TEST, TRAIN
    from caffelite.net import Net
    from caffelite.net_timer import time_net

    phase = TRAIN if args.phase == "TRAIN" else TEST
    _use_gpu(args.gpu)
    net = Net(args.model, phase, stages=_stages(args) or None, level=args.level or 0)
    log.info("Performing Forward-Backward timing over %d iterations", args.iterations)
    started = time.perf_counter()
    report = time_net(net, args.iterations)
    for line in report.lines():
        log.info("%s", line)
        print(line)
    log.info("Total Time: %.1f ms.", (time.perf_counter() - started) * 1000)
    return 0


def _gpu_ids(spec: str) -> list[int]:
    from caffelite import backend

    if spec == "all":
        backend.set_mode_gpu()
        return list(range(backend.device_count()))
    try:
        return [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise CaffeliteError(
            f"--gpu takes device ids such as 0 or 0,1 or all; got {spec!r}"
        ) from None


def _use_gpu(spec: str | None, local_rank: int | None = None) -> None:
    """Caffe's -gpu flag: GPU mode on the one device named, or, for a rank of an MPI job
    (``local_rank``: its place among the ranks on its host), on the local rank's entry of
    the list (one id: every rank of the host uses it)."""
    from caffelite import backend

    if spec is None:
        return
    ids = _gpu_ids(spec)
    if len(ids) > 1 and local_rank is not None:
        if local_rank >= len(ids):
            raise CaffeliteError(
                f"--gpu {spec} lists {len(ids)} devices, but this host runs more ranks than "
                f"that (this is local rank {local_rank}): list one device per rank"
            )
        ids = [ids[local_rank]]
    if len(ids) != 1:
        raise CaffeliteError(
            f"--gpu {spec}: `caffelite test` and `time` run on one GPU; name one device"
        )
    backend.set_device(ids[0])
    backend.set_mode_gpu()
    log.info("Using GPU %d", ids[0])


def _train_on_several_gpus(argv: list[str], ids: list[int]) -> int:
    """``train --gpu 0,1`` (Caffe's multi-GPU training): the same command as an MPI job of
    one rank per device, each rank taking its device from the list."""
    import subprocess

    from caffelite.parallel import mpi

    launcher = mpi.launcher()
    if launcher is None:
        raise CaffeliteError(
            f"--gpu {','.join(map(str, ids))}: training on several GPUs runs one process per "
            'GPU under MPI, and no mpiexec was found: pip install -e ".[mpi]" (or put a '
            "system MPI's mpiexec on PATH)"
        )
    argv = _with_gpu_list(argv, ids)
    command = [launcher, "-n", str(len(ids)), sys.executable, "-m", "caffelite", *argv]
    log.info("Training on GPUs %s: %s", ids, " ".join(command))
    return subprocess.call(command)


def _with_gpu_list(argv: list[str], ids: list[int]) -> list[str]:
    """``argv`` with its --gpu value replaced by the explicit ids (or added, where the
    solver's device_id / --gpu all chose them), so every rank reads the same list."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--gpu", "-gpu"):
            skip = True
            continue
        if arg.startswith(("--gpu=", "-gpu=")):
            continue
        out.append(arg)
    return [*out, "--gpu", ",".join(map(str, ids))]


def _device_query(args) -> int:
    """Caffe's device_query: the properties of each device --gpu names."""
    from caffelite import backend

    for device_id in _gpu_ids(args.gpu or "0"):
        backend.set_mode_gpu()
        for name, value in backend.device_properties(device_id):
            log.info("%s: %s", name, value)
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
