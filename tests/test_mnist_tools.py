"""caffelite.mnist and the tools over it: IDX/CSV readers, the LMDB writer,
tools/get_mnist.py (local copies and checksums) and tools/convert_mnist_data.py."""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffelite import mnist
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"

needs_mnist = pytest.mark.skipif(
    not all((SHARED_MNIST / name).is_file() for name in mnist.MNIST_FILES),
    reason=f"the shared MNIST copy is not at {SHARED_MNIST}",
)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file written plainly: magic, big-endian dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def small_set():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    return images, labels


# ---- IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, small_set, compress):
    images, labels = small_set
    opener = gzip.open if compress else open
    for name, array in (("img", images), ("lab", labels)):
        with opener(tmp_path / name, "wb") as f:
            f.write(idx_bytes(array))
    assert (tmp_path / "img").read_bytes()[: 2 if compress else 4] == (
        b"\x1f\x8b" if compress else (2051).to_bytes(4, "big")
    )
    got_images, got_labels = mnist.load_mnist(tmp_path / "img", tmp_path / "lab")
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] = 1  # a writable copy, not a view of the file bytes


def test_read_idx_other_types(tmp_path):
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    (tmp_path / "i32").write_bytes(idx_bytes(values, 0x0C))
    out = mnist.read_idx(tmp_path / "i32")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_errors(tmp_path, small_set):
    images, labels = small_set
    good = idx_bytes(images)
    cases = {
        "short": (good[:-10], r"short: IDX file truncated: dimensions \(7, 28, 28\) need 5488"),
        "long": (good + b"xx", "long: IDX file has trailing bytes"),
        "magic": (b"\x00\x01" + good[2:], "magic: bad IDX magic number"),
        "header": (good[:9], "header: truncated IDX header"),
        "tiny": (b"\x00", "tiny: not an IDX file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CaffeliteError, match=message):
            mnist.read_idx(tmp_path / name)
    with gzip.open(tmp_path / "full.gz", "wb") as f:
        f.write(good)
    (tmp_path / "cut.gz").write_bytes((tmp_path / "full.gz").read_bytes()[:-20])
    with pytest.raises(CaffeliteError, match=r"cut.gz: truncated or corrupt gzip"):
        mnist.read_idx(tmp_path / "cut.gz")
    with pytest.raises(CaffeliteError, match="absent: no such file"):
        mnist.read_idx(tmp_path / "absent")
    (tmp_path / "lab").write_bytes(idx_bytes(labels[:5]))
    (tmp_path / "img").write_bytes(good)
    with pytest.raises(CaffeliteError, match="has 7 images but .*lab has 5 labels"):
        mnist.load_mnist(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(CaffeliteError, match=r"expected an IDX image file \(magic 2051"):
        mnist.load_mnist(tmp_path / "lab", tmp_path / "lab")


@needs_mnist
def test_shared_mnist_checksums_and_label_counts():
    for name, md5 in mnist.MNIST_FILES.items():
        assert mnist.md5_of_uncompressed(SHARED_MNIST / name) == md5, name
    for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
        images, labels = mnist.load_mnist(
            SHARED_MNIST / f"{prefix}-images-idx3-ubyte.gz",
            SHARED_MNIST / f"{prefix}-labels-idx1-ubyte.gz",
        )
        assert images.shape == (n, 28, 28) and labels.shape == (n,)
        assert tuple(np.bincount(labels, minlength=10)) == mnist.MNIST_LABEL_COUNTS[split]
        assert images.max() == 255 and images.min() == 0


# ---- CSV ---------------------------------------------------------------------------------


def csv_text(images, labels, header=True) -> str:
    lines = ["label," + ",".join(f"{r + 1}x{c + 1}" for r in range(28) for c in range(28))]
    lines = lines if header else []
    for image, label in zip(images, labels, strict=True):
        lines.append(",".join(str(int(v)) for v in [label, *image.ravel()]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("header", [True, False])
def test_read_mnist_csv(tmp_path, small_set, header):
    images, labels = small_set
    text = csv_text(images, labels, header)
    (tmp_path / "m.csv").write_text(text.replace("\n", "\n\n", 2))  # blank lines are skipped
    got_images, got_labels = mnist.read_mnist_csv(tmp_path / "m.csv")
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_mnist_csv_errors(tmp_path, small_set):
    images, labels = small_set
    lines = csv_text(images, labels).splitlines()
    cases = {
        "columns": (
            lines[:3] + [lines[3].rsplit(",", 1)[0]],
            r"columns.csv, line 4: expected 785 "
            r"comma-separated values \(label \+ 28x28 pixels\), found 784",
        ),
        "text": (lines[:2] + [lines[2].replace(",", ",x", 1)], "text.csv: non-numeric value"),
        "pixel": (
            lines[:2] + [lines[2] + "0"],
            r"pixel.csv, line 3, column \d+: value "
            r"\d+ is not an integer pixel in 0..255",
        ),
        "label": (
            lines[:1] + ["-1" + lines[1][1:]],
            r"label.csv, line 2, column 1: value "
            "-1 is not a non-negative integer label",
        ),
        "empty": (lines[:1], "empty.csv: no data lines"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / f"{name}.csv").write_text("\n".join(content) + "\n")
        with pytest.raises(CaffeliteError, match=message):
            mnist.read_mnist_csv(tmp_path / f"{name}.csv")


# ---- LMDB --------------------------------------------------------------------------------


def test_write_lmdb_records_and_keys(tmp_path, small_set):
    images, labels = small_set
    out = tmp_path / "db"
    assert mnist.write_lmdb(out, images, labels, commit_every=3) == 7
    got, got_labels, keys = mnist.read_lmdb(out)
    assert keys == [b"%08d" % i for i in range(7)]
    assert got.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(got[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)

    import lmdb

    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:
        datum = caffe_pb2.Datum.FromString(txn.get(b"00000003"))
    env.close()
    assert (datum.channels, datum.height, datum.width, datum.label) == (1, 28, 28, labels[3])
    assert datum.data == images[3].tobytes() and not datum.encoded

    with pytest.raises(CaffeliteError, match="already exists; remove it or pass overwrite"):
        mnist.write_lmdb(out, images, labels)
    assert mnist.write_lmdb(out, images[:2], labels[:2], overwrite=True) == 2
    assert len(mnist.read_lmdb(out)[2]) == 2
    (tmp_path / "notdb").mkdir()
    (tmp_path / "notdb" / "precious.txt").write_text("keep me")
    with pytest.raises(CaffeliteError, match="refusing to overwrite .* not an LMDB"):
        mnist.write_lmdb(tmp_path / "notdb", images, labels, overwrite=True)
    assert (tmp_path / "notdb" / "precious.txt").exists()


def test_write_lmdb_errors(tmp_path, small_set):
    images, labels = small_set
    with pytest.raises(CaffeliteError, match=r"uint8 images .* got float64 \(7, 28, 28\)"):
        mnist.write_lmdb(tmp_path / "a", images.astype(float), labels)
    with pytest.raises(CaffeliteError, match=r"7 images need labels of shape \(7,\), got \(6,\)"):
        mnist.write_lmdb(tmp_path / "b", images, labels[:6])
    with pytest.raises(CaffeliteError, match="is full"):
        mnist.write_lmdb(tmp_path / "c", images, labels, map_size=4096)


# ---- tools/get_mnist.py --------------------------------------------------------------------


@needs_mnist
def test_get_mnist_from_local_dir_is_idempotent(tmp_path, capsys):
    tool = load_tool("get_mnist")
    out = tmp_path / "mnist"
    assert tool.main(["--from", str(SHARED_MNIST), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert first.count("copied from") == 4 and "MNIST is ready" in first
    for name, md5 in mnist.MNIST_FILES.items():
        assert mnist.md5_of_uncompressed(out / name) == md5
    assert sorted(os.listdir(out)) == sorted(mnist.MNIST_FILES)  # no temporary files left
    stamp = {name: (out / name).stat().st_mtime_ns for name in mnist.MNIST_FILES}
    assert tool.main(["--from", str(tmp_path / "nowhere"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("present, checksum ok") == 4
    assert stamp == {name: (out / name).stat().st_mtime_ns for name in mnist.MNIST_FILES}


def small_source(
    directory: Path, tamper: bool = False, raw: bool = False, name="t10k-labels-idx1-ubyte.gz"
) -> Path:
    """A --from directory holding one real label file (small), maybe altered."""
    directory.mkdir()
    content = gzip.decompress((SHARED_MNIST / name).read_bytes())
    if tamper:
        content = content[:-1] + bytes([(content[-1] + 1) % 256])
    if raw:
        (directory / name[: -len(".gz")]).write_bytes(content)
    else:
        (directory / name).write_bytes(gzip.compress(content))
    return directory


@needs_mnist
def test_get_mnist_rejects_a_tampered_copy(tmp_path):
    source = small_source(tmp_path / "src", tamper=True)
    out = tmp_path / "out"
    with pytest.raises(
        CaffeliteError,
        match=r"checksum mismatch for t10k-labels-idx1-ubyte.gz "
        r"from .*: md5 of the uncompressed content is [0-9a-f]{32}, expected "
        r"27ae3e4e09519cfbb04c329615203637; the file is corrupt",
    ):
        mnist.fetch_mnist(out, from_dir=source, files=["t10k-labels-idx1-ubyte.gz"], log=str)
    assert os.listdir(out) == []  # nothing half-written is left behind


@needs_mnist
def test_get_mnist_cli_reports_bad_copies(tmp_path, capsys):
    tool = load_tool("get_mnist")
    # the files are fetched in order: the images are fine, the labels after them are not
    source = small_source(tmp_path / "src", tamper=True, name="train-labels-idx1-ubyte.gz")
    images = "train-images-idx3-ubyte.gz"
    (source / images).symlink_to(SHARED_MNIST / images)
    assert tool.main(["--from", str(source), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "get_mnist: error: checksum mismatch for train-labels-idx1-ubyte.gz" in err
    assert sorted(os.listdir(tmp_path / "out")) == [images]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tool.main(["--from", str(empty), "--out", str(tmp_path / "out2")]) == 1
    assert (
        "neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte" in capsys.readouterr().err
    )


@needs_mnist
def test_get_mnist_replaces_invalid_file_and_accepts_raw_source(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    source = small_source(tmp_path / "src", raw=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"not mnist")
    log = []
    paths = mnist.fetch_mnist(out, from_dir=source, files=[name], log=log.append)
    assert paths == {name: str(out / name)}
    assert "present but invalid" in log[0] and "copied from" in log[1]
    assert (out / name).read_bytes()[:2] == b"\x1f\x8b"
    assert mnist.md5_of_uncompressed(out / name) == mnist.MNIST_FILES[name]


def test_download_failure_lists_mirrors(tmp_path):
    bad = (tmp_path / "no-such-mirror").as_uri() + "/"
    with pytest.raises(
        CaffeliteError,
        match=r"(?s)could not fetch t10k-labels.*no-such-mirror"
        r".*--from DIR",
    ):
        mnist.fetch_mnist(
            tmp_path / "out", mirrors=[bad], files=["t10k-labels-idx1-ubyte.gz"], log=str
        )


# ---- tools/convert_mnist_data.py -----------------------------------------------------------


def test_convert_idx_and_csv(tmp_path, small_set, capsys):
    tool = load_tool("convert_mnist_data")
    images, labels = small_set
    with gzip.open(tmp_path / "img.gz", "wb") as f:
        f.write(idx_bytes(images))
    (tmp_path / "lab").write_bytes(idx_bytes(labels))
    db = tmp_path / "idx_lmdb"
    assert tool.main([str(tmp_path / "img.gz"), str(tmp_path / "lab"), str(db)]) == 0
    out = capsys.readouterr().out
    assert "A total of 7 items. Rows: 28 Cols: 28" in out
    assert (
        "Per label: "
        + " ".join(f"{d}:{c}" for d, c in enumerate(np.bincount(labels, minlength=10)))
        in out
    )
    got, got_labels, _ = mnist.read_lmdb(db)
    np.testing.assert_array_equal(got[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)

    assert tool.main([str(tmp_path / "img.gz"), str(tmp_path / "lab"), str(db)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    argv = [str(tmp_path / "img.gz"), str(tmp_path / "lab"), str(db), "--overwrite", "--limit", "3"]
    assert tool.main(argv) == 0
    assert "A total of 3 items" in capsys.readouterr().out
    assert len(mnist.read_lmdb(db)[2]) == 3

    (tmp_path / "m.csv").write_text(csv_text(images[::-1], labels[::-1]))
    assert tool.main(["--csv", str(tmp_path / "m.csv"), str(tmp_path / "csv_lmdb")]) == 0
    got, got_labels, _ = mnist.read_lmdb(tmp_path / "csv_lmdb")
    np.testing.assert_array_equal(got[:, 0], images[::-1])
    np.testing.assert_array_equal(got_labels, labels[::-1])

    assert tool.main([str(tmp_path / "missing"), str(tmp_path / "lab"), str(tmp_path / "x")]) == 1
    assert "missing: no such file" in capsys.readouterr().err


def test_convert_usage_errors(tmp_path, capsys):
    tool = load_tool("convert_mnist_data")
    for argv, message in (
        (["a", "b"], "expected IMAGES LABELS OUT_LMDB"),
        (["--csv", "c.csv", "a", "b"], "expected OUT_LMDB after --csv CSV"),
        (["a", "b", "c", "--backend", "leveldb"], "backend 'leveldb' is not supported"),
    ):
        with pytest.raises(SystemExit):
            tool.main(argv)
        assert message in capsys.readouterr().err


@needs_mnist
def test_convert_real_mnist_slice_as_a_script(tmp_path):
    """Runs the tool as `python tools/convert_mnist_data.py` from the repo root."""
    db = tmp_path / "mnist_test_lmdb"
    result = subprocess.run(
        [
            sys.executable,
            "tools/convert_mnist_data.py",
            "--limit",
            "1000",
            str(SHARED_MNIST / "t10k-images-idx3-ubyte.gz"),
            str(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"),
            str(db),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "A total of 1000 items. Rows: 28 Cols: 28" in result.stdout
    images, labels = mnist.load_mnist(
        SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
    )
    got, got_labels, keys = mnist.read_lmdb(db)
    assert keys[0] == b"00000000" and keys[-1] == b"00000999"
    np.testing.assert_array_equal(got[:, 0], images[:1000])
    np.testing.assert_array_equal(got_labels, labels[:1000])


def test_write_lmdb_refuses_an_empty_input_and_leaves_nothing(tmp_path):
    target = tmp_path / "empty_lmdb"
    with pytest.raises(CaffeliteError, match="no images to write"):
        mnist.write_lmdb(target, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    assert not target.exists()
