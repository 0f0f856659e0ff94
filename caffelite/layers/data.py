"""Input layers: ``Data`` (Datum records from an LMDB or a LevelDB, raw or encoded
JPEG/PNG, prefetched by a background thread) and ``MemoryData`` (batches served from
arrays the caller hands over).

Data follows Caffe's DataLayer / BasePrefetchingDataLayer: records are read in key
order, wrapping to the first one at the end; a daemon thread decodes and transforms
whole batches on the host while the net computes (and, in GPU mode, copies them to
the device), and ``forward`` only copies the next finished batch into the tops. The
thread owns a fixed pool of ``prefetch`` batch buffers (Caffe's free/full queues), so
reading ahead is bounded and the steady state allocates nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref

import numpy as np
from google.protobuf.message import DecodeError

from caffelite import backend, db, limits
from caffelite.data_transformer import DataTransformer
from caffelite.datum_codec import decode_datums
from caffelite.errors import CaffeliteError
from caffelite.layer import Layer, register_layer
from caffelite.parallel.world import record_share
from caffelite.proto import caffe_pb2
from caffelite.rng import get_rng
from caffelite.syncedmem import DeviceUpload

logger = logging.getLogger("caffelite")

_CREATE_HINT = (
    "create it with: python tools/get_mnist.py && python tools/convert_mnist_data.py "
    "data/mnist/train-images-idx3-ubyte.gz data/mnist/train-labels-idx1-ubyte.gz "
    "data/mnist/mnist_train_lmdb (and likewise t10k-* -> data/mnist/mnist_test_lmdb)"
)

# ---- shared LMDB environments ------------------------------------------------------------
# py-lmdb refuses to open one environment twice in a process, yet a TRAIN and a TEST net
# may read the same database: environments are shared and reference counted.
_envs: dict[str, list] = {}
#: How often a reader that has its database to itself unmaps what it has read.
REMAP_EVERY_RECORDS = 4096
_envs_lock = threading.Lock()


def _open_env(path: str):
    return db.open_env(path)  # LMDB (checked for truncation), or LevelDB behind py-lmdb's API


def _acquire_env(path: str):
    """(env, key): the shared read-only environment and the key to release it with."""
    key = os.path.realpath(path)
    with _envs_lock:
        entry = _envs.get(key)
        if entry is None:
            entry = _envs[key] = [_open_env(path), 0]
        entry[1] += 1
        return entry[0], key


def _release_env(key: str) -> None:
    with _envs_lock:
        entry = _envs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _envs[key]
            entry[0].close()


def _remap_env(key: str, path: str, env):
    """Reopen ``env`` if this reader is its only user, dropping the pages it has mapped.

    LMDB reads through a memory map, and every page read stays resident in the
    process until the map goes away: over an epoch the whole database would count
    towards the process's memory. Returns the environment to use from now on.
    """
    with _envs_lock:
        entry = _envs.get(key)
        if entry is None or entry[0] is not env or entry[1] != 1:
            return env
        env.close()
        entry[0] = _open_env(path)
        return entry[0]


# ---- reading Datum records ---------------------------------------------------------------


def _parse_datum(value: bytes, key: bytes, source: str):
    try:
        return caffe_pb2.Datum.FromString(value)
    except DecodeError:
        raise CaffeliteError(
            f"{source}: record {key!r} is not a Datum ({len(value)} bytes that do not parse); "
            "the database is damaged, or was written by another tool"
        ) from None


def _decode_batch(values: list[bytes], keys: list[bytes], source: str, color=None):
    """Raw values -> (images (N, C, H, W) uint8 or float32, labels (N,) float32);
    encoded images are decoded as ``color`` says (DataTransformer.decode_color)."""
    datums = [_parse_datum(value, key, source) for value, key in zip(values, keys, strict=True)]
    datums = decode_datums(datums, keys, source, color)
    first = datums[0]
    shape = (first.channels, first.height, first.width)
    count = shape[0] * shape[1] * shape[2]
    if count <= 0:
        raise CaffeliteError(f"{source}: record {keys[0]!r} has an empty shape {shape}")
    for key, datum in zip(keys, datums, strict=True):
        if (datum.channels, datum.height, datum.width) != shape:
            raise CaffeliteError(
                f"{source}: record {key!r} has shape "
                f"{(datum.channels, datum.height, datum.width)}, but the batch started with "
                f"{shape}; records of one batch must share a shape"
            )
        size = len(datum.data) or len(datum.float_data)
        if size != count:
            raise CaffeliteError(
                f"{source}: record {key!r} of shape {shape} carries {size} values, expected {count}"
            )
    labels = np.fromiter((d.label for d in datums), dtype=np.float32, count=len(datums))
    if all(len(d.data) for d in datums):
        images = np.frombuffer(b"".join(d.data for d in datums), dtype=np.uint8)
    else:
        images = np.concatenate(
            [
                np.frombuffer(d.data, np.uint8).astype(np.float32)
                if len(d.data)
                else np.asarray(d.float_data, dtype=np.float32)
                for d in datums
            ]
        )
    return images.reshape((len(datums),) + shape), labels


class _Failure:
    """Put in the queue by the prefetch thread when reading fails."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Batch:
    """A batch buffer, and where the reader stood once it was filled: the key of the
    next record and the transform generator's state (what a resume continues from).
    In GPU mode the thread also uploads it: ``device_data``/``device_label``, and
    ``consumed``, the point on the net's stream after which they may be rewritten."""

    __slots__ = (
        "data",
        "label",
        "next_key",
        "rng_state",
        "device_data",
        "device_label",
        "consumed",
    )

    def __init__(self):
        self.data = np.empty(0, dtype=np.float32)
        self.label = np.empty(0, dtype=np.float32)
        self.next_key = b""
        self.rng_state: dict = {}
        self.device_data = self.device_label = self.consumed = None


class _Prefetcher:
    """The reader thread and its buffer queues; deliberately holds no reference to the
    layer, so an abandoned layer can be garbage collected (its finalizer stops us)."""

    def __init__(
        self,
        env,
        env_key,
        source,
        batch_size,
        start,
        stride,
        transformer,
        rng,
        prefetch,
        upload: DeviceUpload | None = None,
    ):
        self.env = env
        self.env_key = env_key
        self.source = source
        self.batch_size = batch_size
        self.start_at = start  # records passed over first (int), or the key to start at (bytes)
        self.stride = stride  # then every stride-th record is read (round-robin dealing)
        self.transformer = transformer
        self.rng = rng
        self.upload = upload  # GPU mode: the thread also copies each batch to the device
        self.free: queue.Queue = queue.Queue()
        self.full: queue.Queue = queue.Queue()
        for _ in range(prefetch):
            self.free.put(_Batch())
        self.stop = threading.Event()
        self.closed = False
        self.release_on_exit = False
        self.failure: _Failure | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"caffelite-prefetch:{source}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        txn = None
        try:
            txn = self.env.begin(buffers=False)
            cursor = txn.cursor()
            if not cursor.first():
                raise CaffeliteError(f"LMDB {self.source!r} is empty")
            if isinstance(self.start_at, bytes):
                if not cursor.set_key(self.start_at):
                    raise CaffeliteError(
                        f"LMDB {self.source!r} has no record {self.start_at!r}, the next one "
                        "the snapshot's run was to read: the database changed since"
                    )
            else:
                for _ in range(self.start_at):
                    if not cursor.next():
                        cursor.first()
            since_remap = 0
            while True:
                batch = self.free.get()  # close() puts None to wake us up
                if batch is None or self.stop.is_set():
                    break
                keys, values = [], []
                for _ in range(self.batch_size):
                    keys.append(cursor.key())
                    values.append(cursor.value())
                    for _ in range(self.stride):
                        if not cursor.next():
                            cursor.first()
                    if self.stop.is_set():  # a huge batch must not delay close()
                        return
                since_remap += self.batch_size * self.stride
                if since_remap >= REMAP_EVERY_RECORDS:
                    since_remap = 0
                    txn, cursor = self._remap(txn, cursor.key())
                images, labels = _decode_batch(
                    values, keys, self.source, self.transformer.decode_color
                )
                shape = self.transformer.infer_blob_shape(images.shape)
                if batch.data.shape != shape:
                    limits.check_allocation(shape, 4, "a prefetched batch")
                    empty = np.empty if self.upload is None else self.upload.host_empty
                    batch.data = empty(shape, dtype=np.float32)
                self.transformer.transform(images, out=batch.data, rng=self.rng)
                batch.label = labels
                if self.upload is not None:
                    self._push_to_device(batch)
                batch.next_key = cursor.key()
                batch.rng_state = self.rng.bit_generator.state
                self.full.put(batch)
        except BaseException as exc:  # handed to forward, which raises it
            self.full.put(_Failure(exc))
        finally:
            if txn is not None:
                txn.abort()
            if self.release_on_exit:
                _release_env(self.env_key)

    def _push_to_device(self, batch: _Batch) -> None:
        """Copy the batch to the device (after the net's copy out of this buffer ran)."""
        after, batch.consumed = batch.consumed, None
        batch.device_data = self.upload.upload(batch.data, batch.device_data, after)
        batch.device_label = self.upload.upload(batch.label, batch.device_label, after)

    def _remap(self, txn, next_key: bytes):
        """Reopen the database (see ``_remap_env``) and put a cursor back on ``next_key``."""
        txn.abort()
        self.env = _remap_env(self.env_key, self.env_key, self.env)
        txn = self.env.begin(buffers=False)
        cursor = txn.cursor()
        if not cursor.set_key(next_key):
            raise CaffeliteError(f"LMDB {self.source!r} changed while it was being read")
        return txn, cursor

    # -- the consumer --------------------------------------------------------------------
    def next_batch(self) -> _Batch:
        if self.failure is not None:
            raise self.failure.exc
        if self.closed:
            raise CaffeliteError("the layer was closed; its reader thread is stopped")
        while True:
            try:
                item = self.full.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.full.empty():
                    raise CaffeliteError("the prefetch thread stopped unexpectedly") from None
        if isinstance(item, _Failure):
            self.failure = item
            raise item.exc
        return item

    def recycle(self, batch: _Batch) -> None:
        self.free.put(batch)

    def close(self) -> None:
        """Stop the thread, wait for it, and release the database (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        if threading.current_thread() is self.thread:
            # a garbage collection inside the reader finalized the layer: it cannot join
            # itself, so it releases the database on its way out
            self.release_on_exit = True
            return
        self.free.put(None)
        if self.thread.is_alive():
            self.thread.join(timeout=10.0)
        if self.thread.is_alive():  # stuck in a read: leave the env open rather than crash it
            logger.warning("prefetch thread for %s did not stop", self.source)
            return
        _release_env(self.env_key)


def _transform_param(layer_param):
    """transform_param plus the legacy copies in data_param (Caffe's upgrade moves them)."""
    param = caffe_pb2.TransformationParameter()
    param.CopyFrom(layer_param.transform_param)
    legacy = layer_param.data_param
    for field in ("scale", "mean_file", "crop_size", "mirror"):
        if legacy.HasField(field):
            setattr(param, field, getattr(legacy, field))
    if legacy.force_encoded_color:
        param.force_color = True
    return param


@register_layer("Data")
class DataLayer(Layer):
    """Reads Caffe Datum records from an LMDB: tops ``data`` (N, C, H', W') and,
    optionally, ``label`` (N,)."""

    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    max_top_blobs = 2

    _prefetcher: _Prefetcher | None = None

    def setup(self, bottom, top):
        self.close()  # set up again: stop the previous reader
        p = self.layer_param.data_param
        if p.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        if p.prefetch <= 0:
            raise self.error(f"data_param.prefetch must be at least 1, got {p.prefetch}")
        source = p.source
        if not source:
            raise self.error("data_param.source (the LMDB path) is not set")
        if not os.path.exists(source):
            where = "" if os.path.isabs(source) else f" (looked in {os.getcwd()})"
            raise self.error(f"LMDB {source!r} does not exist{where}; {_CREATE_HINT}")
        self._check_backend(source)
        try:
            self.transformer = DataTransformer(_transform_param(self.layer_param), self.phase)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        self.batch_size = int(p.batch_size)
        self.output_labels = len(top) > 1
        self._device = top[0].device  # GPU mode: the prefetch thread uploads the batches

        env, env_key = _acquire_env(source)
        try:
            entries = env.stat()["entries"]
            if entries == 0:
                raise CaffeliteError(f"LMDB {source!r} is empty")
            with env.begin(buffers=False) as txn:
                cursor = txn.cursor()
                cursor.first()
                images, _ = _decode_batch(
                    [cursor.value()], [cursor.key()], source, self.transformer.decode_color
                )
            # crop and mean problems surface here rather than in the thread
            shape = self.transformer.infer_blob_shape(images.shape)
        except CaffeliteError as exc:
            _release_env(env_key)
            raise self.error(str(exc)) from None
        except BaseException:
            _release_env(env_key)
            raise
        # Caffe's rand_skip: start 0..rand_skip-1 records in, so that runs differ in order.
        skip = int(get_rng().integers(p.rand_skip)) % entries if p.rand_skip else 0
        # In a data-parallel job, rank r of N reads records r, r+N, ... (Caffe's Skip).
        first, stride = record_share(self.phase)
        skip = (skip + first) % entries
        # The thread draws crops/flips from its own generator, seeded here from the global
        # one, so a run is reproducible whatever the thread timing.
        rng = np.random.default_rng(int(get_rng().integers(2**63)))
        self._stride = stride
        self._start_reader(env, env_key, skip, rng)
        top[0].reshape((self.batch_size,) + shape[1:])
        if self.output_labels:
            top[1].reshape(self.batch_size)

    def _start_reader(self, env, env_key, start, rng) -> None:
        """Start the prefetch thread at ``start`` (a skip count or a record key)."""
        self._consumed = {
            "key": start.hex() if isinstance(start, bytes) else None,
            "skip": 0 if isinstance(start, bytes) else start,
            "rng": rng.bit_generator.state,
        }
        device = self._device
        # one per thread: its CUDA stream and current device belong to the thread
        self._uploader = None if device is None else DeviceUpload(device, backend.device_id())
        self._prefetcher = _Prefetcher(
            env,
            env_key,
            self.layer_param.data_param.source,
            self.batch_size,
            start,
            self._stride,
            self.transformer,
            rng,
            int(self.layer_param.data_param.prefetch),
            self._uploader,
        )
        self._finalizer = weakref.finalize(self, self._prefetcher.close)
        self._prefetcher.start()

    # ---- caffelite.resume: the position the net has consumed, not the reader's ----------
    def resume_state(self) -> dict:
        return dict(self._consumed)

    def restore_resume_state(self, state: dict) -> None:
        try:
            start = bytes.fromhex(state["key"]) if state["key"] is not None else state["skip"]
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise self.error(f"malformed Data resume state ({exc!r})") from None
        self.close()
        env, env_key = _acquire_env(self.layer_param.data_param.source)
        self._start_reader(env, env_key, start, rng)

    def _check_backend(self, source: str) -> None:
        """The files decide the backend; a ``backend`` that names the other one is an error
        (Caffe's default, LEVELDB, applies only when the field is set)."""
        p = self.layer_param.data_param
        try:
            db.reader_backend(source, p.backend if p.HasField("backend") else None)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None

    def reshape(self, bottom, top):
        """Tops are sized by ``forward`` to each batch, as in Caffe."""

    def forward(self, bottom, top):
        if self._prefetcher is None:
            raise self.error("forward before setup")
        try:
            batch = self._prefetcher.next_batch()
        except CaffeliteError as exc:
            raise self.error(f"reading {self._prefetcher.source!r}: {exc}") from exc
        except Exception as exc:
            raise self.error(
                f"reading {self._prefetcher.source!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        xp = self.xp
        uploaded = batch.device_data is not None  # GPU mode: on the device already
        top[0].reshape(batch.data.shape)
        top[0].data[...] = batch.device_data if uploaded else xp.asarray(batch.data)
        if self.output_labels:
            top[1].reshape(batch.label.shape)
            top[1].data[...] = batch.device_label if uploaded else xp.asarray(batch.label)
        if uploaded:
            batch.consumed = self._uploader.consumed()
        self._consumed = {"key": batch.next_key.hex(), "skip": 0, "rng": batch.rng_state}
        self._prefetcher.recycle(batch)

    def close(self) -> None:
        """Stop the prefetch thread and release the database."""
        if self._prefetcher is not None:
            self._finalizer()


# ---- MemoryData ----------------------------------------------------------------------------


@register_layer("MemoryData")
class MemoryDataLayer(Layer):
    """Serves consecutive ``batch_size`` slices of arrays given with ``set_input_arrays``
    (pycaffe) or ``reset``, wrapping around; tops data (N, C, H, W) and label: (N,) after
    setup and (N, 1, 1, 1) after forward, as Caffe's MemoryDataLayer.

    As in Caffe, arrays handed over with ``set_input_arrays``/``reset`` are served
    as they are (no transform_param; a warning says so); ``add_datum_vector`` applies
    the transformation, like Caffe's AddDatumVector.
    """

    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 2

    def setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.channels, self.height, self.width = int(p.channels), int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise self.error(
                "memory_data_param needs positive batch_size, channels, height and width; got "
                f"{self.batch_size}, {self.channels}, {self.height}, {self.width}"
            )
        try:
            self.transformer = DataTransformer(self.layer_param.transform_param, self.phase)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        self._data = None
        self._labels = None
        self._n = 0
        self._pos = 0
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)

    def reshape(self, bottom, top):
        """Tops are sized by ``forward``."""

    def set_input_arrays(self, data, labels) -> None:
        """pycaffe's check-and-reset: ``data`` float32 (N, C, H, W) and ``labels`` float32
        with N values, both C-contiguous, N a multiple of batch_size. The arrays are
        referenced, not copied: keep them alive and unchanged while they are served."""
        expected = (self.channels, self.height, self.width)
        if not isinstance(data, np.ndarray) or not isinstance(labels, np.ndarray):
            raise self.error("set_input_arrays needs numpy arrays for data and labels")
        for what, array in (("data", data), ("labels", labels)):
            if array.dtype != np.float32:
                raise self.error(f"{what} array must be float32, got {array.dtype}")
            if not array.flags.c_contiguous:
                raise self.error(f"{what} array must be C-contiguous")
        if data.ndim != 4 or data.shape[1:] != expected:
            raise self.error(
                f"data array must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {data.shape}"
            )
        n = data.shape[0]
        if labels.ndim == 0 or labels.shape[0] != labels.size:
            raise self.error(
                f"labels must hold one value per item, shape (N,) or (N, 1, 1, 1); "
                f"got {labels.shape}"
            )
        if labels.shape[0] != n:
            raise self.error(
                f"data has {n} items but labels has {labels.shape[0]}; they must match"
            )
        self.reset(data, labels, n)

    def reset(self, data, labels, n: int) -> None:
        """Serve the first ``n`` items of ``data``/``labels`` from the start (Caffe's Reset)."""
        n = int(n)
        if n <= 0 or n % self.batch_size:
            raise self.error(f"n = {n} must be a positive multiple of batch_size {self.batch_size}")
        item = self.channels * self.height * self.width
        data = np.asarray(data).reshape(-1)
        labels = np.asarray(labels).reshape(-1)
        if data.size < n * item or labels.size < n:
            raise self.error(
                f"reset with n = {n} needs {n * item} data values and {n} labels, "
                f"got {data.size} and {labels.size}"
            )
        if self.layer_param.HasField("transform_param"):
            logger.warning(
                "layer %r (MemoryData) does not transform arrays given by "
                "set_input_arrays/reset (as in Caffe)",
                self.name,
            )
        self._data = data[: n * item].reshape(n, self.channels, self.height, self.width)
        self._labels = labels[:n]
        self._n = n
        self._pos = 0

    def add_datum_vector(self, datums) -> None:
        """Transform Datums (transform_param applies) and serve them (AddDatumVector)."""
        from caffelite.io import datum_to_array

        datums = list(datums)
        if not datums or len(datums) % self.batch_size:
            raise self.error(
                f"add_datum_vector needs a positive multiple of batch_size {self.batch_size} "
                f"datums, got {len(datums)}"
            )
        images = np.stack([datum_to_array(d) for d in datums])
        try:
            shape = self.transformer.infer_blob_shape(images.shape)
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        if shape[1:] != (self.channels, self.height, self.width):
            raise self.error(
                f"datums of shape {images.shape[1:]} transform to {shape[1:]}, but "
                f"memory_data_param says {(self.channels, self.height, self.width)}"
            )
        data = self.transformer.transform(images)
        labels = np.asarray([d.label for d in datums], dtype=np.float32)
        self._data, self._labels, self._n, self._pos = data, labels, len(datums), 0

    def set_batch_size(self, batch_size: int) -> None:
        """Caffe's set_batch_size: later forwards serve ``batch_size`` items."""
        batch_size = int(batch_size)
        if batch_size <= 0:
            raise self.error(f"batch_size must be positive, got {batch_size}")
        if self._data is not None and self._n % batch_size:
            raise self.error(
                f"the {self._n} items held are not a multiple of the new batch_size {batch_size}"
            )
        self.batch_size = batch_size

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error(
                "has no data: call set_input_arrays(data, labels) (or reset) before forward"
            )
        xp = self.xp
        b, pos = self.batch_size, self._pos
        if pos + b <= self._n:
            items = slice(pos, pos + b)
        else:  # only after set_batch_size changed the stride: wrap instead of overrunning
            items = (pos + np.arange(b)) % self._n
        top[0].reshape(b, self.channels, self.height, self.width)
        top[0].data[...] = xp.asarray(self._data[items])
        top[1].reshape(b, 1, 1, 1)  # (N,) after setup, (N, 1, 1, 1) after forward, as Caffe
        top[1].data[...] = xp.asarray(self._labels[items]).reshape(b, 1, 1, 1)
        self._pos = (pos + b) % self._n
