"""Caffe's key-value databases (``util/db.hpp``): LMDB and LevelDB behind one small
interface for the tools that write and read Datum records.

Keys are bytes and sort bytewise in both backends, so records come back in the
order Caffe's cursors give. Writing follows Caffe: a database is created new (an
existing one is an error, Caffe's ``db::NEW``), puts are buffered in a transaction
and committed together; LevelDB is opened with Caffe's options (64 KiB blocks,
256 MiB write buffer, 100 open files), LMDB's map grows when it fills, as
Caffe's LMDB transaction does.

LevelDB comes from plyvel (``pip install caffelite[leveldb]``), imported on use.
``open_env`` gives the Data layer a read-only environment of either kind through
the part of py-lmdb's API that its reader thread uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from caffelite.errors import CaffeliteError
from caffelite.lmdb_integrity import check_not_truncated

LMDB, LEVELDB = "lmdb", "leveldb"
BACKENDS = (LMDB, LEVELDB)
_DESCRIBED = {LMDB: "an LMDB (data.mdb)", LEVELDB: "a LevelDB (CURRENT)"}

# Caffe's LevelDB::Open options.
_LEVELDB_OPTIONS = dict(block_size=65536, write_buffer_size=268435456, max_open_files=100)
_LMDB_INITIAL_MAP = 1 << 30


def backend_name(backend) -> str:
    """'lmdb' or 'leveldb' from a name in any case or a DataParameter.DB value."""
    from caffelite.proto import caffe_pb2

    if isinstance(backend, int):
        return {caffe_pb2.DataParameter.LMDB: LMDB, caffe_pb2.DataParameter.LEVELDB: LEVELDB}[
            backend
        ]
    name = str(backend).lower()
    if name not in BACKENDS:
        raise CaffeliteError(f"unknown database backend {backend!r}; use lmdb or leveldb")
    return name


def detect_backend(path: str) -> str | None:
    """The backend whose files are at ``path`` (None when neither's are)."""
    if os.path.isfile(path):
        return LMDB  # an LMDB opened without subdir
    if os.path.isfile(os.path.join(path, "data.mdb")):
        return LMDB
    if os.path.isfile(os.path.join(path, "CURRENT")):
        return LEVELDB
    return None


def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise CaffeliteError(
            "LevelDB needs plyvel: pip install plyvel (or pip install caffelite[leveldb])"
        ) from None
    return plyvel


def _open_leveldb(path: str, create: bool):
    plyvel = _plyvel()
    try:
        if create:
            return plyvel.DB(path, create_if_missing=True, error_if_exists=True, **_LEVELDB_OPTIONS)
        return plyvel.DB(path, create_if_missing=False, **_LEVELDB_OPTIONS)
    except plyvel.Error as exc:
        raise CaffeliteError(f"cannot open LevelDB {path!r}: {exc}") from None


# ---- writing ------------------------------------------------------------------------------


class Writer:
    """A new database: ``put`` buffers a record, ``commit`` writes the buffer in one
    transaction. Use as a context manager: leaving it commits what is left and closes."""

    def __init__(self, path, backend: str = LMDB):
        self.path = os.fspath(path)
        self.backend = backend_name(backend)
        if os.path.exists(self.path):
            raise CaffeliteError(f"database {self.path!r} already exists; remove it first")
        self._pending: list[tuple[bytes, bytes]] = []
        if self.backend == LEVELDB:
            self._db = _open_leveldb(self.path, create=True)
        else:
            import lmdb

            os.makedirs(self.path)
            self._db = lmdb.open(self.path, map_size=_LMDB_INITIAL_MAP, subdir=True)

    def put(self, key: bytes | str, value: bytes) -> None:
        self._pending.append((key.encode() if isinstance(key, str) else bytes(key), value))

    def commit(self) -> None:
        if not self._pending:
            return
        if self.backend == LEVELDB:
            with self._db.write_batch() as batch:
                for key, value in self._pending:
                    batch.put(key, value)
        else:
            self._commit_lmdb()
        self._pending = []

    def _commit_lmdb(self) -> None:
        import lmdb

        while True:
            try:
                with self._db.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:  # the transaction was aborted: grow the map and redo it
                self._db.set_mapsize(self._db.info()["map_size"] * 2)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()


# ---- reading ------------------------------------------------------------------------------


def reader_backend(path: str, backend=None) -> str:
    """The backend to read ``path`` with: what its files are; ``backend`` must agree."""
    if not os.path.exists(path):
        raise CaffeliteError(f"database {path!r} does not exist")
    found = detect_backend(path)
    if backend is None:
        if found is None:
            raise CaffeliteError(f"{path!r} is neither an LMDB (data.mdb) nor a LevelDB (CURRENT)")
        return found
    wanted = backend_name(backend)
    if found is not None and found != wanted:
        raise CaffeliteError(
            f"{path!r} holds {_DESCRIBED[found]}, but the backend asked for is {wanted.upper()}"
        )
    return wanted


def read_records(path, backend=None) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a database in key order; ``backend`` None detects it."""
    path = os.fspath(path)
    env = open_env(path, reader_backend(path, backend))
    try:
        with env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            more = cursor.first()
            while more:
                yield cursor.key(), cursor.value()
                more = cursor.next()
    finally:
        env.close()


def open_env(path: str, backend=None):
    """A read-only environment for ``path``: py-lmdb's own for LMDB, else a LevelDBEnv."""
    backend = reader_backend(path, backend)
    if backend == LEVELDB:
        return LevelDBEnv(path)
    import lmdb

    try:
        env = lmdb.open(
            path, readonly=True, lock=False, subdir=os.path.isdir(path), max_readers=512
        )
    except lmdb.Error as exc:
        raise CaffeliteError(f"cannot open LMDB {path!r}: {exc}") from exc
    try:
        check_not_truncated(env, path)  # before a read past the file's end raises SIGBUS
    except BaseException:
        env.close()
        raise
    return env


class LevelDBEnv:
    """A LevelDB read through the subset of py-lmdb's Environment that the Data layer
    uses: ``begin()`` gives a snapshot transaction, ``stat()['entries']`` the count."""

    def __init__(self, path: str):
        self.path = path
        self._db = _open_leveldb(path, create=False)

    def begin(self, buffers: bool = False) -> _LevelDBTxn:
        return _LevelDBTxn(self._db.snapshot())

    def stat(self) -> dict:
        with self.begin() as txn:
            count = sum(1 for _ in txn.snapshot.iterator(include_value=False))
        return {"entries": count}

    def close(self) -> None:
        self._db.close()


class _LevelDBTxn:
    def __init__(self, snapshot):
        self.snapshot = snapshot

    def cursor(self) -> _LevelDBCursor:
        return _LevelDBCursor(self.snapshot.iterator())

    def abort(self) -> None:
        self.snapshot.close()

    def __enter__(self) -> _LevelDBTxn:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


class _LevelDBCursor:
    """py-lmdb's Cursor protocol (first/next/set_key return whether positioned)."""

    def __init__(self, iterator):
        self._iterator = iterator
        self._item: tuple[bytes, bytes] | None = None

    def _step(self) -> bool:
        self._item = next(self._iterator, None)
        return self._item is not None

    def first(self) -> bool:
        self._iterator.seek_to_start()
        return self._step()

    def next(self) -> bool:
        return self._step()

    def set_key(self, key: bytes) -> bool:
        self._iterator.seek(key)
        return self._step() and self._item[0] == key

    def key(self) -> bytes:
        return self._item[0] if self._item is not None else b""

    def value(self) -> bytes:
        return self._item[1] if self._item is not None else b""
