"""The training loop (Caffe's Solver and the shared half of SGDSolver).

A Solver owns one train net and any number of test nets that share its weights.
``step(n)`` runs Caffe's Solver::Step: test when due, ``iter_size`` forward /
backward passes whose parameter gradients accumulate, display, then
``apply_update``: learning rate from the policy, gradient clipping, and per
parameter normalisation (by ``iter_size``), weight decay and the update rule's
``compute_update_value`` -- the one method an update rule overrides -- before
``net.update()`` subtracts the diffs from the weights.

Snapshots are ``<prefix>_iter_<N>.caffemodel`` plus ``<prefix>_iter_<N>.solverstate``
(iteration, the caffemodel's path, the update history, the lr step, and the data
positions and random streams an exact resume needs: ``caffelite.resume``), each
written atomically, the state only after the weights are complete.

Stopping: an action function (``set_action_function``, e.g. a SignalHandler's
``get_requested_action``) is asked after every iteration. "snapshot" writes a
snapshot and goes on; "stop" writes a snapshot (unless one was just written for
this iteration) and ends the loop. Caffe itself snapshots a stopped run only
through ``snapshot_after_train`` in Solve; here ``step`` snapshots on its own, so
a stopped ``step()`` never loses work either.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from caffelite import backend, parallel, resume, rng
from caffelite.blob import Blob, proto_shape, shapes_match
from caffelite.device_checks import raise_pending as raise_pending_device_checks
from caffelite.diagnose import on_non_finite_loss
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN
from caffelite.logging_setup import caffe_number
from caffelite.lr_policy import learning_rate
from caffelite.net import Net, load_net_param
from caffelite.prototxt import read_binary, read_text, write_binary_atomic
from caffelite.signal_handler import SolverAction, parse_action
from caffelite.solver_checks import check_solver_numbers

logger = logging.getLogger("caffelite")

_LEGACY_TYPES = {
    0: "SGD",
    1: "Nesterov",
    2: "AdaGrad",
    3: "RMSProp",
    4: "AdaDelta",
    5: "Adam",
}


# ---- reading the SolverParameter --------------------------------------------------
def upgrade_solver_type(param, source: str = "<SolverParameter>") -> None:
    """Translate the legacy ``solver_type`` enum into the ``type`` string (in place)."""
    if not param.HasField("solver_type"):
        return
    if param.HasField("type"):
        raise CaffeliteError(
            f"{source}: the legacy solver_type field (enum) and the type field (string) "
            "cannot both be given; keep only type"
        )
    name = _LEGACY_TYPES.get(param.solver_type)
    if name is None:
        raise CaffeliteError(f"{source}: unknown solver_type {param.solver_type}")
    param.type = name
    param.ClearField("solver_type")
    logger.info("%s: upgraded the legacy solver_type field to type: %r", source, name)


def _upgrade_snapshot_prefix(param, path: Path) -> None:
    """Caffe's default prefix: the solver file's name without its extension; a
    prefix naming an existing directory gets the solver file's stem appended."""
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = str(path.with_suffix(""))
        logger.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
    elif Path(param.snapshot_prefix).is_dir():
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / path.stem)
        logger.info("snapshot_prefix is a directory and is set to %s", param.snapshot_prefix)


def load_solver_param(source):
    """A SolverParameter from a prototxt path (or a copy of a SolverParameter), upgraded."""
    from caffelite.proto import caffe_pb2

    param = caffe_pb2.SolverParameter()
    if isinstance(source, caffe_pb2.SolverParameter):
        param.CopyFrom(source)
        upgrade_solver_type(param)
        return param
    if not isinstance(source, (str, Path)):
        raise CaffeliteError(
            f"a solver needs a solver prototxt path or a SolverParameter, got {type(source)!r}"
        )
    read_text(source, param)
    upgrade_solver_type(param, str(source))
    _upgrade_snapshot_prefix(param, Path(source))
    return param


# ---- the registry of update rules ---------------------------------------------------
_SOLVERS: dict[str, type] = {}


def register_solver(type_name: str):
    """Class decorator: make ``type_name`` usable as a solver ``type``."""

    def decorate(cls):
        if type_name in _SOLVERS:
            raise CaffeliteError(
                f"solver type {type_name!r} is already registered "
                f"(by {_SOLVERS[type_name].__qualname__})"
            )
        cls.type = type_name
        _SOLVERS[type_name] = cls
        return cls

    return decorate


def _load_builtin_solvers() -> None:
    import caffelite.solvers  # noqa: F401  (registers the built-in update rules)


def solver_type_list() -> list[str]:
    _load_builtin_solvers()
    return sorted(_SOLVERS)


def solver_class(type_name: str):
    """The Solver subclass registered for ``type_name``; a clear error listing the known."""
    _load_builtin_solvers()
    cls = _SOLVERS.get(type_name)
    if cls is None:
        raise CaffeliteError(
            f"unknown solver type {type_name!r}; known types: {', '.join(sorted(_SOLVERS))}"
        )
    return cls


def get_solver(param_or_path, source=None):
    """pycaffe's ``caffe.get_solver``: the solver of the ``type`` the parameters name.
    ``source``: the solver file a SolverParameter came from (net paths resolve beside it)."""
    param = load_solver_param(param_or_path)
    return solver_class(param.type)(param_or_path, source)


# ---- small helpers ------------------------------------------------------------------
class _FunctionCallback:
    def __init__(self, on_start, on_gradients_ready):
        self._on_start = on_start
        self._on_gradients_ready = on_gradients_ready

    def on_start(self) -> None:
        if self._on_start is not None:
            self._on_start()

    def on_gradients_ready(self) -> None:
        if self._on_gradients_ready is not None:
            self._on_gradients_ready()


# ---- the Solver ---------------------------------------------------------------------
class Solver:
    """Base of the update rules; ``Solver(path)`` builds the one ``type`` names.

    Attributes (pycaffe's): ``net``, ``test_nets``, ``iter``, ``param``,
    ``test_results`` (per test net, the last ``test()`` results), ``history``
    (per learnable parameter, the update rule's state; AdaDelta and Adam keep
    two entries per parameter, the second set after the first).
    """

    type = ""
    #: How many history blobs the update rule keeps per learnable parameter.
    history_per_param = 1
    #: A NaN or infinite loss: "stop" (raise, naming the layer) or "continue" (Caffe's).
    on_non_finite = "stop"

    def __new__(cls, param=None, *args, **kwargs):
        if cls is Solver:
            cls = solver_class(load_solver_param(param).type)
        return super().__new__(cls)

    def __init__(self, param, source=None):
        from caffelite.proto import caffe_pb2

        self.param = load_solver_param(param)
        if source is None and not isinstance(param, caffe_pb2.SolverParameter):
            source = param
        self._source = None if source is None else Path(source)
        if self.type and self.param.type != self.type:
            logger.warning(
                "solver parameters ask for type %r; running %s as constructed",
                self.param.type,
                type(self).__name__,
            )
        logger.info(
            "Initializing solver from parameters: \n%s", text_format.MessageToString(self.param)
        )
        self._check_param()
        self.check_param()
        if self.param.random_seed >= 0:
            rng.set_random_seed(self.param.random_seed)
        self.callbacks: list = []
        self._action_function = None
        self.requested_early_exit = False
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        self._load_initial_weights()
        self.test_results: list[OrderedDict] = [OrderedDict() for _ in self.test_nets]
        self.test_losses: list[float | None] = [None for _ in self.test_nets]
        logger.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._loss = 0.0  # the last iteration's loss (averaged over iter_size)
        #: Losses still on the device, (position in the run, loss): read at display.
        self._pending_losses: list[tuple[int, object]] = []
        self.iterations_per_second: float | None = None  # as the last display printed it
        self._losses: list[float] = []
        self._timer_start = time.perf_counter()
        self._iterations_last = 0
        self._last_snapshot_iter: int | None = None
        self.pre_solve()

    # ---- parameter checks ------------------------------------------------------
    def _check_param(self) -> None:
        p = self.param
        check_solver_numbers(p, str(self._source or "solver"))
        if p.average_loss < 1:
            raise CaffeliteError(f"average_loss must be at least 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise CaffeliteError(f"iter_size must be at least 1, got {p.iter_size}")
        if p.weight_decay and p.regularization_type not in ("L1", "L2"):
            raise CaffeliteError(
                f'unknown regularization_type {p.regularization_type!r}; use "L2" or "L1"'
            )
        self._check_snapshot_write_permissions()
        if p.HasField("solver_mode") and p.solver_mode == p.GPU and not backend.is_gpu_mode():
            logger.warning(
                "solver_mode: GPU: the solver runs where the nets were built, and they were "
                "built in CPU mode (call set_mode_gpu() first, or caffelite train --gpu)"
            )

    def check_param(self) -> None:
        """Update rules add their own checks of the parameters here."""

    def _check_snapshot_write_permissions(self) -> None:
        p = self.param
        if not p.snapshot or not parallel.root_solver():  # only the root solver writes
            return
        if not p.HasField("snapshot_prefix"):
            raise CaffeliteError("snapshot is set but snapshot_prefix is not")
        probe = Path(f"{p.snapshot_prefix}_iter_0.tempfile")
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CaffeliteError(
                f"cannot write to snapshot prefix {p.snapshot_prefix!r} ({exc.strerror}); "
                "make sure its directory is writable"
            ) from None

    # ---- building the nets ---------------------------------------------------------
    def _resolve(self, name: str, what: str = "net file") -> Path:
        """A net (or weights) file: as given (relative to the current directory, like Caffe), else
        relative to the solver file's directory."""
        path = Path(name)
        if path.is_absolute() or path.exists() or self._source is None:
            return path
        beside = self._source.parent / path
        if beside.exists():
            return beside
        raise CaffeliteError(
            f"{what} {name!r} not found in the current directory nor next to the "
            f"solver file {str(self._source)!r}"
        )

    def _make_net(self, net_param, phase: int, extra_state) -> Net:
        """Caffe's NetState precedence: phase default, the net's own state, then the
        solver's train_state / test_state; the phase is the one asked for."""
        from caffelite.proto import caffe_pb2

        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(net_param.state)
        if extra_state is not None:
            state.MergeFrom(extra_state)
        state.phase = phase
        net_param.state.CopyFrom(state)
        return Net(net_param, phase, stages=list(state.stage), level=state.level)

    def _init_train_net(self) -> Net:
        p = self.param
        fields = ("net", "net_param", "train_net", "train_net_param")
        given = [f for f in fields if p.HasField(f)]
        if not given:
            raise CaffeliteError(
                f"the solver must specify a train net using one of these fields: "
                f"{', '.join(fields)}"
            )
        if len(given) > 1:
            raise CaffeliteError(
                f"the solver must not specify more than one train net; it gives "
                f"{', '.join(given)} (fields: {', '.join(fields)})"
            )
        if p.HasField("train_net_param"):
            logger.info("Creating training net specified in train_net_param.")
            net_param = load_net_param(p.train_net_param)
        elif p.HasField("train_net"):
            logger.info("Creating training net from train_net file: %s", p.train_net)
            net_param = load_net_param(self._resolve(p.train_net))
        elif p.HasField("net_param"):
            logger.info("Creating training net specified in net_param.")
            net_param = load_net_param(p.net_param)
        else:
            logger.info("Creating training net from net file: %s", p.net)
            net_param = load_net_param(self._resolve(p.net))
        return self._make_net(net_param, TRAIN, p.train_state)

    def _init_test_nets(self) -> list[Net]:
        p = self.param
        has_net_param, has_net_file = p.HasField("net_param"), p.HasField("net")
        if has_net_param and has_net_file:
            raise CaffeliteError("the solver may not specify both net_param and net")
        num_specific = len(p.test_net_param) + len(p.test_net)
        if has_net_param or has_net_file:
            if len(p.test_iter) < num_specific:
                raise CaffeliteError(
                    f"test_iter must be given for each test net: {num_specific} test net(s), "
                    f"{len(p.test_iter)} test_iter value(s)"
                )
        elif len(p.test_iter) != num_specific:
            raise CaffeliteError(
                f"test_iter must be given for each test net: {num_specific} test net(s), "
                f"{len(p.test_iter)} test_iter value(s)"
            )
        num_instances = len(p.test_iter)
        if p.test_state and len(p.test_state) != num_instances:
            raise CaffeliteError(
                f"test_state must be unspecified or given once per test net: "
                f"{num_instances} test net(s), {len(p.test_state)} test_state(s)"
            )
        if num_instances and p.test_interval <= 0:
            raise CaffeliteError(
                f"test_interval must be > 0 when there are test nets ({num_instances} from "
                f"test_iter); got {p.test_interval}"
            )
        sources: list[tuple[str, object]] = []
        for net_param in p.test_net_param:
            sources.append(("test_net_param", load_net_param(net_param)))
        for name in p.test_net:
            sources.append((f"test_net file: {name}", load_net_param(self._resolve(name))))
        remaining = num_instances - len(sources)
        for _ in range(remaining):
            if has_net_param:
                sources.append(("net_param", load_net_param(p.net_param)))
            elif has_net_file:
                sources.append((f"net file: {p.net}", load_net_param(self._resolve(p.net))))
        nets = []
        for i, (source, net_param) in enumerate(sources):
            logger.info("Creating test net (#%d) specified by %s", i, source)
            state = p.test_state[i] if p.test_state else None
            net = self._make_net(net_param, TEST, state)
            net.share_with(self.net)
            net.debug_info = p.debug_info
            nets.append(net)
        return nets

    def _load_initial_weights(self) -> None:
        """The solver's ``weights`` entries (each may list several files, comma-separated)."""
        for entry in self.param.weights:
            self.load_weights(entry)

    def load_weights(self, paths: str) -> None:
        """Copy trained weights into the train net and every test net, as Caffe's
        ``caffe train --weights a.caffemodel,b.caffemodel`` does (layers matched by name)."""
        for name in paths.split(","):
            if not name:
                continue
            path = self._resolve(name, "weights file")
            logger.info("Loading weights from %s", path)
            for net in [self.net, *self.test_nets]:
                net.copy_from(path)

    def pre_solve(self) -> None:
        """Allocate the history (zeros) and the scratch buffers, one per parameter, where
        the net's parameters are (on the device in GPU mode)."""
        with self.net.device_scope():
            xp = backend.xp()
            params = self.net.learnable_params
            self.history = [
                Blob(*p.shape, dtype=p.dtype) for _ in range(self.history_per_param) for p in params
            ]
            self._update = [xp.zeros(p.shape, dtype=p.dtype) for p in params]
            self._temp = [xp.zeros(p.shape, dtype=p.dtype) for p in params]

    # ---- pycaffe conveniences ----------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """Hook into every iteration: an object with ``on_start()`` and
        ``on_gradients_ready()`` (and optionally ``on_test_done(test_net_id, results)``),
        or the two functions (pycaffe's form)."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            self.callbacks.append(on_start)
        else:
            self.callbacks.append(_FunctionCallback(on_start, on_gradients_ready))

    def set_action_function(self, function) -> None:
        """``function()`` returns "none", "snapshot" or "stop" (a SolverAction)."""
        self._action_function = function

    def get_requested_action(self) -> str:
        if self._action_function is None:
            return SolverAction.NONE
        return parse_action(self._action_function())

    def share_weights(self, net: Net) -> None:
        """Let ``net`` use the train net's weights (pycaffe's ``share_weights``)."""
        net.share_with(self.net)

    # ---- the loop --------------------------------------------------------------------
    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        self._losses = []
        self.smoothed_loss = 0.0
        self.requested_early_exit = False
        self._timer_start = time.perf_counter()
        self._iterations_last = self.iter

        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (
                p.test_interval
                and self.iter % p.test_interval == 0
                and (self.iter > 0 or p.test_initialization)
            ):
                self.test_all()
                if self.requested_early_exit:  # stop requested while testing
                    self._snapshot_for_stop()
                    break
            for callback in self.callbacks:
                callback.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            self.net.debug_info = display and p.debug_info
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss /= p.iter_size
            self._pending_losses.append((self.iter - start_iter, loss))
            if display or self.net.device is None:
                self._read_losses(average_loss)
            if display:
                self._display_train()
            for callback in self.callbacks:
                callback.on_gradients_ready()
            self.apply_update()
            self.iter += 1  # the number of updates applied so far

            request = self.get_requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT:
                self._read_losses(average_loss)
                self.snapshot()
            if request == SolverAction.STOP:
                self.requested_early_exit = True
                self._snapshot_for_stop()
                break
        self._read_losses(average_loss)

    @property
    def loss(self) -> float:
        """The last iteration's loss (averaged over ``iter_size``); in GPU mode reading it
        brings the losses still on the device to the host."""
        self._read_losses(self.param.average_loss)
        return self._loss

    def _read_losses(self, average_loss: int) -> None:
        """Check and smooth the losses not yet read, in order (Caffe checks each one as it
        comes; on the device they wait for the next display, snapshot or end of the step,
        so that an iteration makes no round trip to the host)."""
        raise_pending_device_checks()
        pending, self._pending_losses = self._pending_losses, []
        if not pending:
            return
        losses = [loss for _, loss in pending]
        device = self.net.device
        if device is not None:  # one copy for all of them
            losses = backend.to_numpy(device.stack([device.asarray(v) for v in losses]))
        for (position, _), loss in zip(pending, losses, strict=True):
            loss = float(loss)
            self._loss = loss
            if not math.isfinite(loss):
                on_non_finite_loss(self, loss)
            self._update_smoothed_loss(loss, position, average_loss)

    def solve(self, resume_file=None) -> None:
        """Train up to ``max_iter`` (Caffe's Solver::Solve), optionally resuming."""
        p = self.param
        logger.info("Solving %s", self.net.name)
        logger.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file is not None:
            logger.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if (
            p.snapshot_after_train
            and (not p.snapshot or self.iter % p.snapshot != 0)
            and self._last_snapshot_iter != self.iter
        ):
            self.snapshot()
        if self.requested_early_exit:
            logger.info("Optimization stopped early.")
            return
        # One more forward pass to show the loss of the final weights, and a test.
        if p.display and self.iter % p.display == 0:
            loss = float(self.net.forward_from_to())
            self._update_smoothed_loss(loss, self.iter - start_iter, p.average_loss)
            logger.info("Iteration %d, loss = %s", self.iter, caffe_number(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        logger.info("Optimization Done.")

    def _update_smoothed_loss(self, loss: float, position: int, average_loss: int) -> None:
        """Mean of the last ``average_loss`` losses, kept in a ring buffer; ``position``
        is the iteration's index in this run."""
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            index = position % average_loss
            self.smoothed_loss += (loss - self._losses[index]) / average_loss
            self._losses[index] = loss

    def _display_train(self) -> None:
        p = self.param
        now = time.perf_counter()
        lapse = now - self._timer_start
        per_s = (self.iter - self._iterations_last) / (lapse if lapse else 1.0)
        self.iterations_per_second = per_s
        logger.info(
            "Iteration %d (%s iter/s, %ss/%d iters), loss = %s",
            self.iter,
            caffe_number(per_s),
            caffe_number(lapse),
            p.display,
            caffe_number(self.smoothed_loss),
        )
        self._timer_start = now
        self._iterations_last = self.iter
        self._log_outputs("Train", self._output_values(self.net))

    @staticmethod
    def _output_values(net: Net) -> list[tuple[str, np.ndarray, float]]:
        return [
            (name, backend.to_numpy(net.blobs[name].data), net.blob_loss_weight_list[blob_id])
            for name, blob_id in zip(net.outputs, net.output_ids, strict=True)
        ]

    @staticmethod
    def _log_outputs(kind: str, values) -> None:
        index = 0
        for name, array, weight in values:
            for value in np.asarray(array).ravel():
                extra = (
                    f" (* {caffe_number(weight)} = {caffe_number(weight * value)} loss)"
                    if weight
                    else ""
                )
                logger.info(
                    "    %s net output #%d: %s = %s%s",
                    kind,
                    index,
                    name,
                    caffe_number(value),
                    extra,
                )
                index += 1

    # ---- testing --------------------------------------------------------------------
    def test_all(self) -> list[OrderedDict | None]:
        """Test every test net (stopping early if asked); their results. Only the root
        solver tests (rank 0 of a data-parallel job, ``caffelite.parallel``)."""
        results = []
        if not parallel.root_solver():
            return results
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(test_net_id))
        return results

    def test(self, test_net_id: int = 0) -> OrderedDict | None:
        """``test_iter`` forward passes of a test net; the mean of every output.

        Returns (and keeps in ``test_results[test_net_id]``) an ordered dict
        output name -> mean: a float for one-element outputs, an array shaped
        like the output otherwise. None when a stop request interrupted it.
        """
        if not 0 <= test_net_id < len(self.test_nets):
            raise CaffeliteError(
                f"test net #{test_net_id} does not exist; the solver has "
                f"{len(self.test_nets)} test net(s)"
            )
        p = self.param
        logger.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        test_iter = p.test_iter[test_net_id]
        sums: list[np.ndarray] | None = None
        loss = 0.0
        for _ in range(test_iter):
            request = self.get_requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self.get_requested_action()
            if self.requested_early_exit:
                break
            iter_loss = net.forward_from_to()
            if p.test_compute_loss:
                loss += iter_loss
            outputs = [backend.to_numpy(net.blobs[name].data) for name in net.outputs]
            if sums is None:  # accumulated in the outputs' own type, as Caffe does
                sums = [np.array(out, copy=True) for out in outputs]
            else:
                for total, out in zip(sums, outputs, strict=True):
                    total += out
        if self.requested_early_exit:
            logger.info("Test interrupted.")
            return None
        raise_pending_device_checks()
        if p.test_compute_loss and test_iter > 0:
            loss = float(loss) / test_iter
            self.test_losses[test_net_id] = loss
            logger.info("Test loss: %s", caffe_number(loss))
        results: OrderedDict = OrderedDict()
        if sums is not None:
            logged = []
            for (name, blob_id), total in zip(
                zip(net.outputs, net.output_ids, strict=True), sums, strict=True
            ):
                mean = total / total.dtype.type(test_iter)
                results[name] = float(mean.reshape(-1)[0]) if mean.size == 1 else mean
                logged.append((name, mean, net.blob_loss_weight_list[blob_id]))
            self._log_outputs("Test", logged)
        self.test_results[test_net_id] = results
        for callback in self.callbacks:  # observers of test results (e.g. TensorBoard)
            if hasattr(callback, "on_test_done"):
                callback.on_test_done(test_net_id, results)
        return results

    # ---- the update ---------------------------------------------------------------
    def get_learning_rate(self) -> float:
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self) -> None:
        """Turn the accumulated gradients into one weight update (SGDSolver::ApplyUpdate),
        computed where the parameters are."""
        rate = self.get_learning_rate()
        p = self.param
        if p.display and self.iter % p.display == 0:
            logger.info("Iteration %d, lr = %s", self.iter, caffe_number(rate))
        with self.net.device_scope():
            self.clip_gradients()
            for param_id in range(len(self.net.learnable_params)):
                self.normalize(param_id)
                self.regularize(param_id)
                self.compute_update_value(param_id, rate)
            self.net.update()

    def clip_gradients(self) -> None:
        """Scale all gradients down together when their global L2 norm exceeds
        ``clip_gradients`` (negative: off)."""
        clip = self.param.clip_gradients
        if clip < 0:
            return
        xp = backend.xp()
        diffs = [blob.diff for blob in self.net.learnable_params]
        sumsq = 0.0
        for diff in diffs:
            flat = diff.reshape(-1)
            sumsq += float(xp.dot(flat, flat))
        norm = math.sqrt(sumsq)
        if norm > clip:
            scale = clip / norm
            logger.info(
                "Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                caffe_number(norm),
                caffe_number(clip),
                caffe_number(scale),
            )
            for diff in diffs:
                diff *= scale

    def normalize(self, param_id: int) -> None:
        """Divide the gradient summed over ``iter_size`` passes by ``iter_size``."""
        iter_size = self.param.iter_size
        if iter_size == 1:
            return
        self.net.learnable_params[param_id].diff *= 1.0 / iter_size

    def regularize(self, param_id: int) -> None:
        """Add the weight-decay gradient: ``decay * w`` (L2) or ``decay * sign(w)`` (L1)."""
        local_decay = self.param.weight_decay * self.net.params_weight_decay[param_id]
        if not local_decay:
            return
        xp = backend.xp()
        blob = self.net.learnable_params[param_id]
        temp = self._temp[param_id]
        kind = self.param.regularization_type
        if kind == "L2":
            xp.multiply(blob.data, local_decay, out=temp)
        elif kind == "L1":
            xp.sign(blob.data, out=temp)
            temp *= local_decay
        else:
            raise CaffeliteError(f'unknown regularization_type {kind!r}; use "L2" or "L1"')
        blob.diff += temp

    def compute_update_value(self, param_id: int, rate: float) -> None:
        """Replace the parameter's diff with the step to subtract (the update rule)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement an update rule")

    # ---- snapshots --------------------------------------------------------------------
    def snapshot_filename(self, extension: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> tuple[str, str] | None:
        """Write the weights, then the solver state; the two paths. Only the root solver
        writes (rank 0 of a data-parallel job): elsewhere None, nothing written."""
        from caffelite.proto import caffe_pb2

        if not parallel.root_solver():
            self._last_snapshot_iter = self.iter
            return None
        fmt = self.param.snapshot_format
        if fmt == caffe_pb2.SolverParameter.BINARYPROTO:
            model_filename = self.snapshot_to_binary_proto()
            state_filename = self.snapshot_solver_state(model_filename)
        elif fmt == caffe_pb2.SolverParameter.HDF5:
            model_filename = self.snapshot_to_hdf5()
            state_filename = self.snapshot_solver_state_to_hdf5(model_filename)
        else:
            raise CaffeliteError(f"unsupported snapshot_format {fmt}")
        self._last_snapshot_iter = self.iter
        return model_filename, state_filename

    def snapshot_to_binary_proto(self) -> str:
        model_filename = self.snapshot_filename(".caffemodel")
        logger.info("Snapshotting to binary proto file %s", model_filename)
        write_binary_atomic(model_filename, self.net.to_proto(self.param.snapshot_diff))
        return model_filename

    def snapshot_to_hdf5(self) -> str:
        from caffelite.hdf5 import save_net_hdf5

        model_filename = self.snapshot_filename(".caffemodel.h5")
        logger.info("Snapshotting to HDF5 file %s", model_filename)
        save_net_hdf5(self.net, model_filename, self.param.snapshot_diff)
        return model_filename

    def snapshot_solver_state_to_hdf5(self, model_filename: str) -> str:
        from caffelite.hdf5 import save_solver_state_hdf5

        filename = self.snapshot_filename(".solverstate.h5")
        logger.info("Snapshotting solver state to HDF5 file %s", filename)
        save_solver_state_hdf5(
            filename,
            self.iter,
            model_filename,
            self.current_step,
            [blob.data for blob in self.history],
            self._resume_record(),
        )
        return filename

    def snapshot_solver_state(self, model_filename: str) -> str:
        from caffelite.proto import caffe_pb2

        state = caffe_pb2.SolverState(
            iter=self.iter,
            learned_net=model_filename,
            current_step=self.current_step,
            caffelite_resume=self._resume_record(),
        )
        state.history.extend(blob.to_proto() for blob in self.history)
        filename = self.snapshot_filename(".solverstate")
        logger.info("Snapshotting solver state to binary proto file %s", filename)
        write_binary_atomic(filename, state)
        return filename

    def _resume_record(self) -> bytes:
        """Data positions and random streams, for an exact resume (caffelite.resume)."""
        return resume.capture([self.net, *self.test_nets])

    def _snapshot_for_stop(self) -> None:
        if self._last_snapshot_iter != self.iter:
            self.snapshot()

    def restore(self, state_file) -> None:
        """Resume from a .solverstate: weights, iteration, lr step, update history and,
        when caffelite wrote it, data positions and random streams (caffelite.resume)."""
        from caffelite.proto import caffe_pb2

        state_file = str(state_file)
        if state_file.endswith(".h5"):
            self._restore_hdf5(state_file)
            return
        state = read_binary(state_file, caffe_pb2.SolverState())
        if len(state.history) != len(self.history):
            raise CaffeliteError(
                f"{state_file} holds {len(state.history)} history blobs; this {self.type} "
                f"solver needs {len(self.history)} ({self.history_per_param} per learnable "
                f"parameter, {len(self.net.learnable_params)} parameters). Was it written "
                "by another solver type or net?"
            )
        for i, (proto, blob) in enumerate(zip(state.history, self.history, strict=True)):
            shape = proto_shape(proto)
            if not shapes_match(shape, blob.shape):
                raise CaffeliteError(
                    f"{state_file}: history blob {i} has shape {shape}; the net's parameter "
                    f"needs {blob.shape}"
                )
        learned = None
        if state.HasField("learned_net"):
            learned = self._find_learned_net(state.learned_net, Path(state_file))
        self.iter = state.iter
        if learned is not None:
            self.net.copy_from(learned)
        self.current_step = state.current_step
        logger.info("%s: restoring history", type(self).__name__)
        for proto, blob in zip(state.history, self.history, strict=True):
            blob.from_proto(proto, reshape=False)
        resume.restore(state.caffelite_resume, [self.net, *self.test_nets], state_file)

    def _restore_hdf5(self, state_file: str) -> None:
        from caffelite.hdf5 import load_solver_state_hdf5

        state = load_solver_state_hdf5(state_file, self.history)  # checks and copies history
        if state.learned_net:
            self.net.copy_from(self._find_learned_net(state.learned_net, Path(state_file)))
        self.iter = state.iter
        self.current_step = state.current_step
        resume.restore(state.caffelite_resume, [self.net, *self.test_nets], state_file)

    @staticmethod
    def _find_learned_net(learned_net: str, state_file: Path) -> Path:
        """The weights file a solverstate names: as written, else beside the state file."""
        path = Path(learned_net)
        candidates = [path]
        if not path.is_absolute():
            candidates += [state_file.parent / path, state_file.parent / path.name]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        raise CaffeliteError(
            f"{state_file}: its weights file {learned_net!r} was not found "
            f"(looked in: {', '.join(str(c) for c in candidates)})"
        )


__all__ = [
    "Solver",
    "SolverAction",
    "get_solver",
    "load_solver_param",
    "register_solver",
    "solver_class",
    "solver_type_list",
    "upgrade_solver_type",
]
