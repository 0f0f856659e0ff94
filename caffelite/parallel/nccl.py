"""NCCL, the GPU all-reduce, through CuPy: pycaffe's ``caffe.has_nccl()`` and
``caffe.NCCL``, and the device all-reduce of the MPI reducer in GPU mode.

``has_nccl()`` is True where CuPy loads NCCL (``cupy.cuda.nccl``; the CuPy wheels find
it in the ``nvidia-nccl`` wheel) and sees a GPU. Elsewhere it is False, so pycaffe code
that checks it (``python/train.py`` style) takes its single-process path, and using
``NCCL`` anyway is a clear error pointing at the MPI path rather than a silent no-op,
which would let every process train alone on its share of the data.
"""

from __future__ import annotations

from caffelite import parallel
from caffelite.errors import CaffeliteError
from caffelite.parallel.buckets import BucketSchedule, plan_buckets

_UNAVAILABLE = (
    "NCCL is not available here (caffe.has_nccl() is False: it needs CuPy with NCCL and "
    "a GPU). For data-parallel training across processes, run `mpirun -np N caffelite "
    'train --solver S.prototxt` (pip install -e ".[mpi]"), or attach '
    "caffelite.parallel.mpi.MPIGradientReducer to the solver in pycaffe code"
)


def _nccl_module():
    """CuPy's NCCL binding where NCCL loads, else None."""
    try:
        from cupy.cuda import nccl

        nccl.get_version()
    except Exception:  # ImportError, or CuPy's error when libnccl is missing
        return None
    return nccl


def has_nccl() -> bool:
    """Whether NCCL is available (pycaffe's ``caffe.has_nccl``): CuPy, NCCL and a GPU."""
    if _nccl_module() is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver
        return False


def _require_nccl():
    nccl = _nccl_module()
    if nccl is None or not has_nccl():
        raise CaffeliteError(_UNAVAILABLE)
    return nccl


class DeviceAllReduce:
    """An NCCL communicator of ``size`` processes: sums (or broadcasts) device buffers in
    place, queued on the current CUDA stream; ``synchronize`` waits for them."""

    def __init__(self, size: int, rank: int, uid: bytes):
        import cupy

        self._nccl, self._cupy = _require_nccl(), cupy
        self._types = {
            "float32": self._nccl.NCCL_FLOAT32,
            "float64": self._nccl.NCCL_FLOAT64,
        }
        # NCCL's id is 128 C chars; CuPy takes them as Python ints, signed on x86.
        signed = tuple(b - 256 if b > 127 else b for b in bytes(uid))
        self.comm = self._nccl.NcclCommunicator(size, signed, rank)

    def _args(self, buffer):
        stream = self._cupy.cuda.get_current_stream().ptr
        return buffer.data.ptr, buffer.size, self._types[buffer.dtype.name], stream

    def all_reduce(self, buffer) -> None:
        pointer, count, kind, stream = self._args(buffer)
        self.comm.allReduce(pointer, pointer, count, kind, self._nccl.NCCL_SUM, stream)

    def bcast(self, buffer, root: int = 0) -> None:
        pointer, count, kind, stream = self._args(buffer)
        self.comm.bcast(pointer, count, kind, root, stream)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()


class NCCL:
    """pycaffe's ``caffe.NCCL(solver, uid)``: one process of Caffe's multi-process GPU
    training (python/train.py). The process sets its device, ``set_solver_count`` and
    ``set_solver_rank`` and builds its solver in GPU mode first; then ``bcast()`` gives
    every process rank 0's weights, and as ``solver.add_callback(nccl)`` (plus
    ``net.after_backward(nccl)`` for ``layer_wise_reduce``) it sums the gradient buckets
    on the devices and scales them by 1/count before every update."""

    def __init__(self, solver, uid: bytes):
        _require_nccl()
        if solver.net.device is None or not hasattr(solver.net.device, "cuda"):
            raise CaffeliteError(
                "caffe.NCCL needs a solver built in GPU mode on CuPy: call "
                "caffe.set_mode_gpu() and caffe.set_device(id) before building it"
            )
        self.solver = solver
        self.size, self.rank = parallel.solver_count(), parallel.solver_rank()
        self.device_reduce = DeviceAllReduce(self.size, self.rank, uid)
        self.buckets = plan_buckets(solver.net)
        start = lambda bucket: self.device_reduce.all_reduce(bucket.pack())  # noqa: E731
        self.schedule = BucketSchedule(
            self.buckets, solver.param.iter_size, solver.param.layer_wise_reduce, start
        )

    @staticmethod
    def new_uid() -> bytes:
        """The NCCL session id to hand every process (pycaffe: bytes)."""
        return bytes(b & 0xFF for b in _require_nccl().get_unique_id())

    def bcast(self) -> None:
        """Copy rank 0's weights and update history to every process."""
        for blob in [*self.solver.net.learnable_params, *self.solver.history]:
            self.device_reduce.bcast(blob.mutable_gpu_data())
        self.device_reduce.synchronize()

    # ---- the solver callback and the after_backward hook --------------------------------
    def on_start(self) -> None:
        self.schedule.begin_step()

    def __call__(self, layer_id: int) -> None:
        self.schedule.after_layer_backward(layer_id)

    def on_gradients_ready(self) -> None:
        self.schedule.start_ready(-1)
        self.device_reduce.synchronize()
        self.schedule.end_step()
        for bucket in self.buckets:
            bucket.unpack(1.0 / self.size, from_host=False)
