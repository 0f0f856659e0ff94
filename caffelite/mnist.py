"""MNIST: IDX and CSV readers, the LMDB writer, and fetching/verifying the four files.

This is the library behind ``tools/get_mnist.py`` and ``tools/convert_mnist_data.py``.
The LMDB layout is Caffe's (convert_mnist_data.cpp): one ``Datum`` per image
(1 x 28 x 28 uint8 pixels in ``data``, the digit in ``label``) under keys
``'%08d' % index``, so the records sort in file order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable

import numpy as np

from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2

#: The four files, with the md5 of their *uncompressed* content (the .gz bytes vary
#: with the compressor, the IDX content does not).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

#: Known copies of the original .gz files, tried in order.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Images per digit 0..9, a quick sanity check of a full copy.
MNIST_LABEL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


# ---- reading files --------------------------------------------------------------------


def _is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_maybe_gzip(path):
    """A binary file object for ``path``, decompressing when it is gzip (by content)."""
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _read_bytes(path) -> bytes:
    if not os.path.isfile(path):
        raise CaffeliteError(f"{path}: no such file")
    try:
        with _open_maybe_gzip(path) as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise CaffeliteError(f"{path}: truncated or corrupt gzip file ({exc})") from exc


def read_idx(path) -> np.ndarray:
    """An IDX file (gzip-compressed or raw) as a numpy array in native byte order.

    The magic number (two zero bytes, a type code, the number of dimensions) and the
    file size are checked, so a truncated or foreign file is an error naming the file.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise CaffeliteError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or type_code not in _IDX_TYPES or ndim == 0:
        raise CaffeliteError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected e.g. "
            f"{IDX_IMAGES_MAGIC} for images or {IDX_LABELS_MAGIC} for labels"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CaffeliteError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise CaffeliteError(
            f"{path}: IDX file {what}: dimensions {dims} need {expected} data bytes, found {found}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def load_mnist(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST image/label file pair: images (N, rows, cols) uint8 and labels (N,) uint8."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CaffeliteError(
            f"{images_path}: expected an IDX image file (magic {IDX_IMAGES_MAGIC}, uint8 "
            f"N x rows x cols), found {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise CaffeliteError(
            f"{labels_path}: expected an IDX label file (magic {IDX_LABELS_MAGIC}, uint8 N), "
            f"found {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise CaffeliteError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


def read_mnist_csv(path, rows: int = 28, cols: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The common MNIST CSV: one image per line, the label then rows*cols pixel values.

    A header line (one whose first field is not a number) is skipped, as are blank
    lines. Returns images (N, rows, cols) uint8 and labels (N,) int64.
    """
    if not os.path.isfile(path):
        raise CaffeliteError(f"{path}: no such file")
    try:
        with _open_maybe_gzip(path) as f:
            text = f.read().decode("ascii")
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as exc:
        raise CaffeliteError(f"{path}: cannot read CSV text ({exc})") from exc
    lines = text.splitlines()
    columns = 1 + rows * cols
    body: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == 1 and not _is_number(line.split(",", 1)[0]):
            continue  # header
        found = line.count(",") + 1
        if found != columns:
            raise CaffeliteError(
                f"{path}, line {number}: expected {columns} comma-separated values "
                f"(label + {rows}x{cols} pixels), found {found}"
            )
        body.append(line)
        numbers.append(number)
    if not body:
        raise CaffeliteError(f"{path}: no data lines")
    try:
        values = np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise CaffeliteError(f"{path}: non-numeric value ({exc})") from exc
    bad = (values != np.round(values)) | (values < 0)
    bad[:, 1:] |= values[:, 1:] > 255
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CaffeliteError(
            f"{path}, line {numbers[row]}, column {col + 1}: value {values[row, col]:g} is not "
            + ("a non-negative integer label" if col == 0 else "an integer pixel in 0..255")
        )
    labels = values[:, 0].astype(np.int64)
    images = values[:, 1:].astype(np.uint8).reshape(-1, rows, cols)
    return images, labels


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


# ---- LMDB -------------------------------------------------------------------------------


def _datum_bytes(image: np.ndarray, label: int, shape: tuple[int, int, int]) -> bytes:
    datum = caffe_pb2.Datum(
        channels=shape[0], height=shape[1], width=shape[2], data=image.tobytes(), label=label
    )
    return datum.SerializeToString()


def write_lmdb(
    path,
    images,
    labels,
    map_size: int | None = None,
    overwrite: bool = False,
    commit_every: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``images`` (N, H, W) or (N, C, H, W) uint8 and ``labels`` (N,) as Caffe Datum
    records under keys ``'%08d' % i``; returns N.

    ``map_size`` (bytes) defaults to twice the data size plus slack. An existing
    database is an error unless ``overwrite`` (then it is replaced; only a
    directory that holds an LMDB is ever removed).
    """
    import lmdb

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise CaffeliteError(
            f"write_lmdb needs uint8 images of shape (N, H, W) or (N, C, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if images.ndim == 3:
        images = images[:, None]
    n = len(images)
    if labels.shape != (n,):
        raise CaffeliteError(
            f"write_lmdb: {n} images need labels of shape ({n},), got {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise CaffeliteError("write_lmdb: labels must be integers")
    if n == 0:
        raise CaffeliteError("write_lmdb: there are no images to write (the input is empty)")
    path = os.fspath(path)
    _prepare_lmdb_target(path, overwrite)
    shape = tuple(int(d) for d in images.shape[1:])
    if map_size is None:
        map_size = 2 * n * (images[0].size + 64) + (16 << 20)
    images = np.ascontiguousarray(images)
    int_labels = labels.astype(np.int64).tolist()
    env = lmdb.open(path, map_size=int(map_size), subdir=True, lock=True)
    try:
        for start in range(0, n, commit_every):
            stop = min(start + commit_every, n)
            items = [
                (b"%08d" % i, _datum_bytes(images[i], int_labels[i], shape))
                for i in range(start, stop)
            ]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
            if progress is not None:
                progress(stop)
        env.sync()
    except lmdb.MapFullError as exc:
        raise CaffeliteError(
            f"LMDB {path!r} is full (map_size {map_size} bytes); pass a larger map_size"
        ) from exc
    finally:
        env.close()
    return n


def _prepare_lmdb_target(path: str, overwrite: bool) -> None:
    if not os.path.exists(path):
        os.makedirs(path)
        return
    if not overwrite:
        raise CaffeliteError(f"{path!r} already exists; remove it or pass overwrite (--overwrite)")
    if not os.path.isdir(path) or not (
        os.path.exists(os.path.join(path, "data.mdb")) or not os.listdir(path)
    ):
        raise CaffeliteError(
            f"refusing to overwrite {path!r}: it is not an LMDB directory (no data.mdb)"
        )
    shutil.rmtree(path)
    os.makedirs(path)


def read_lmdb(path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """All (or the first ``limit``) raw uint8 Datum records of an LMDB, in key order:
    images (N, C, H, W), labels (N,) int64 and the keys. For checks and small sets."""
    import lmdb

    from caffelite.io import datum_to_array

    if not os.path.isdir(path):
        raise CaffeliteError(f"LMDB {path!r} does not exist")
    env = lmdb.open(os.fspath(path), readonly=True, lock=False)
    images, labels, keys = [], [], []
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                if limit is not None and len(keys) >= limit:
                    break
                datum = caffe_pb2.Datum.FromString(value)
                images.append(datum_to_array(datum))
                labels.append(datum.label)
                keys.append(bytes(key))
    finally:
        env.close()
    if not images:
        return np.zeros((0, 0, 0, 0), np.uint8), np.zeros(0, np.int64), keys
    return np.stack(images), np.asarray(labels, dtype=np.int64), keys


# ---- fetching and verifying -------------------------------------------------------------


def md5_of_uncompressed(path) -> str:
    """The md5 of a file's content after gzip decompression (raw files as they are)."""
    digest = hashlib.md5()
    try:
        with _open_maybe_gzip(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise CaffeliteError(f"{path}: truncated or corrupt gzip file ({exc})") from exc
    return digest.hexdigest()


def _verify(path, expected: str) -> str | None:
    """None when ``path``'s uncompressed md5 is ``expected``, else the reason it is not."""
    try:
        found = md5_of_uncompressed(path)
    except CaffeliteError as exc:
        return str(exc)
    if found != expected:
        return f"md5 of the uncompressed content is {found}, expected {expected}"
    return None


def fetch_mnist(
    out_dir,
    from_dir=None,
    mirrors: Iterable[str] = MNIST_MIRRORS,
    files: Iterable[str] | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Put the four verified MNIST .gz files in ``out_dir``; returns name -> path.

    Files already present with the right checksum are kept (so a rerun does nothing).
    Others come from ``from_dir`` (the .gz or the uncompressed file) or else from the
    mirrors. A copy whose uncompressed md5 is wrong is rejected and not left behind.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = list(files) if files is not None else list(MNIST_FILES)
    paths = {}
    for name in names:
        expected = MNIST_FILES[name]
        target = os.path.join(out_dir, name)
        if os.path.exists(target):
            problem = _verify(target, expected)
            if problem is None:
                log(f"{target}: present, checksum ok")
                paths[name] = target
                continue
            log(f"{target}: present but invalid ({problem}); fetching it again")
        if from_dir is not None:
            _copy_verified(os.fspath(from_dir), name, expected, target)
            log(f"{target}: copied from {from_dir}, checksum ok")
        else:
            url = _download_verified(name, expected, target, list(mirrors), timeout, log)
            log(f"{target}: downloaded from {url}, checksum ok")
        paths[name] = target
    return paths


def _temp_in(directory: str, name: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.close(fd)
    return tmp


def _install(tmp: str, target: str, expected: str, origin: str) -> None:
    """Move ``tmp`` to ``target`` if its checksum is right; delete it otherwise."""
    problem = _verify(tmp, expected)
    if problem is not None:
        os.unlink(tmp)
        raise CaffeliteError(
            f"checksum mismatch for {os.path.basename(target)} from {origin}: {problem}; "
            "the file is corrupt or not the original MNIST"
        )
    os.replace(tmp, target)


def _copy_verified(from_dir: str, name: str, expected: str, target: str) -> None:
    gz_source = os.path.join(from_dir, name)
    raw_source = os.path.join(from_dir, name[: -len(".gz")])
    tmp = _temp_in(os.path.dirname(target) or ".", name)
    try:
        if os.path.isfile(gz_source):
            source = gz_source
            if _is_gzip(source):
                shutil.copyfile(source, tmp)
            else:  # named .gz but stored raw: compress it so the target is a real .gz
                _gzip_file(source, tmp)
        elif os.path.isfile(raw_source):
            source = raw_source
            _gzip_file(source, tmp)
        else:
            raise CaffeliteError(f"--from {from_dir!r}: neither {name} nor {name[:-3]} is there")
        _install(tmp, target, expected, source)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _gzip_file(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _download_verified(name, expected, target, mirrors, timeout, log) -> str:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        tmp = _temp_in(os.path.dirname(target) or ".", name)
        try:
            log(f"downloading {url}")
            request = urllib.request.Request(url, headers={"User-Agent": "caffelite-get-mnist"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f, _CHUNK)
            _install(tmp, target, expected, url)
            return url
        except (OSError, CaffeliteError) as exc:  # URLError and HTTPError are OSErrors
            failures.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise CaffeliteError(
        f"could not fetch {name} from any mirror:\n  "
        + "\n  ".join(failures)
        + "\ncopy the files from a local directory instead with --from DIR"
    )
