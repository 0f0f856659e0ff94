"""caffelite.db: LMDB and LevelDB written and read as Caffe's util/db does."""

from __future__ import annotations

import lmdb
import pytest

from caffelite import db
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2


@pytest.fixture(params=["lmdb", "leveldb"])
def backend(request):
    if request.param == "leveldb":
        pytest.importorskip("plyvel")
    return request.param


def caffe_datum_bytes(channels: int, height: int, width: int, data: bytes, label: int) -> bytes:
    """A Datum in protobuf wire format, field by field as Caffe's C++ serializer writes it:
    channels=1, height=2, width=3 (varints), data=4 (length-delimited), label=5 (varint)."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return (
        b"\x08" + varint(channels) + b"\x10" + varint(height) + b"\x18" + varint(width)
        + b"\x22" + varint(len(data)) + data + b"\x28" + varint(label)
    )  # fmt: skip


def test_datum_layout_matches_caffe_wire_format():
    datum = caffe_pb2.Datum(channels=3, height=2, width=200, data=bytes(range(7)), label=300)
    assert datum.SerializeToString() == caffe_datum_bytes(3, 2, 200, bytes(range(7)), 300)


def test_write_then_read_in_key_order(tmp_path, backend):
    path = tmp_path / f"out_{backend}"
    with db.Writer(path, backend) as writer:
        for key in (b"00000002_c", b"00000000_a", b"00000001_b"):
            writer.put(key, key[-1:] * 3)
        writer.commit()
        writer.put("00000003_d", b"ddd")  # committed on leaving
    assert db.detect_backend(str(path)) == backend
    assert list(db.read_records(path)) == [
        (b"00000000_a", b"aaa"),
        (b"00000001_b", b"bbb"),
        (b"00000002_c", b"ccc"),
        (b"00000003_d", b"ddd"),
    ]
    env = db.open_env(str(path))
    try:
        assert env.stat()["entries"] == 4
        with env.begin() as txn:
            cursor = txn.cursor()
            assert cursor.set_key(b"00000002_c") and cursor.value() == b"ccc"
            assert cursor.next() and cursor.key() == b"00000003_d"
            assert not cursor.next()
            assert not cursor.set_key(b"00000001_x")
    finally:
        env.close()


def test_leveldb_written_with_caffes_options_is_read(tmp_path):
    plyvel = pytest.importorskip("plyvel")
    path = tmp_path / "caffe_leveldb"
    raw = plyvel.DB(str(path), create_if_missing=True, block_size=65536)
    raw.put(b"00001", caffe_datum_bytes(1, 1, 2, b"\x01\x02", 7))
    raw.close()
    ((key, value),) = list(db.read_records(path, "leveldb"))
    assert key == b"00001" and caffe_pb2.Datum.FromString(value).label == 7


def test_lmdb_map_grows_when_full(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "_LMDB_INITIAL_MAP", 64 << 10)
    path = tmp_path / "grow"
    with db.Writer(path, "lmdb") as writer:
        for i in range(40):
            writer.put(b"%05d" % i, bytes(4096))
    env = lmdb.open(str(path), readonly=True, lock=False)
    assert env.stat()["entries"] == 40 and env.info()["map_size"] > 64 << 10
    env.close()


def test_errors(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(CaffeliteError, match="already exists"):
        db.Writer(tmp_path / "taken", "lmdb")
    with pytest.raises(CaffeliteError, match="unknown database backend 'rocks'"):
        db.Writer(tmp_path / "new", "rocks")
    with pytest.raises(CaffeliteError, match="does not exist"):
        list(db.read_records(tmp_path / "nowhere"))
    with pytest.raises(CaffeliteError, match="neither an LMDB"):
        list(db.read_records(tmp_path / "taken"))
    with db.Writer(tmp_path / "an_lmdb", "lmdb") as writer:
        writer.put(b"k", b"v")
    with pytest.raises(CaffeliteError, match="holds an LMDB .* asked for is LEVELDB"):
        list(db.read_records(tmp_path / "an_lmdb", caffe_pb2.DataParameter.LEVELDB))
