"""Fuzz targets for every loader, shared by tests/test_fuzz.py (a short budget in CI)
and tools/fuzz.py (long runs).

Each target takes bytes (or, for the prototxt targets, a structured mutation) and
feeds them to one loader. The property every target must hold: the input either
loads or raises CaffeliteError -- never another exception, never a hang, never an
unbounded allocation. ``check_target`` runs one input and says which it was.

Seeds are small valid files made on the fly (never committed); mutators turn a
seed into the hostile inputs: byte flips, truncation, insertion, and, for
prototxts, numeric fields set to odd values (the experiment of issue 14).
"""

from __future__ import annotations

import io
import re
import resource
import tempfile
from pathlib import Path

import numpy as np

from caffelite import limits
from caffelite.errors import CaffeliteError

REPO = Path(__file__).resolve().parents[1]

#: The odd values issue 14 put into numeric prototxt fields.
ODD_VALUES = ("0", "-1", "1048576", "2147483647", "nan", "inf")
#: The memory limit the targets run under: anything larger is refused, cheaply.
FUZZ_MEMORY_LIMIT = 64 << 20
#: A target whose input raises the peak resident memory by more breaks the property.
ALLOWED_PEAK_BYTES = 4 * FUZZ_MEMORY_LIMIT

_NUMBER = re.compile(r"(?<=: )[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)\b")


# ---- prototxt mutation ---------------------------------------------------------------------
def numeric_spans(text: str) -> list[tuple[int, int]]:
    """Where the numbers of ``field: number`` entries are in a prototxt."""
    return [m.span() for m in _NUMBER.finditer(text)]


def set_numbers(text: str, changes: dict[int, str]) -> str:
    """``text`` with the numbers at span indices ``changes`` replaced by their values."""
    spans = numeric_spans(text)
    for index in sorted(changes, reverse=True):
        start, end = spans[index]
        text = text[:start] + changes[index] + text[end:]
    return text


def make_lmdb(directory: Path, count: int = 128) -> Path:
    """A small MNIST-shaped LMDB (random pixels, labels 0..9) to stand in for MNIST."""
    from caffelite.mnist import write_lmdb

    path = directory / "fuzz_lmdb"
    if not path.exists():
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        write_lmdb(path, images, rng.integers(0, 10, size=count))
    return path


def lenet_train_text(lmdb_path: Path) -> str:
    """models/lenet/lenet_train_test.prototxt reading ``lmdb_path`` in both phases."""
    text = (REPO / "models/lenet/lenet_train_test.prototxt").read_text()
    return re.sub(r'source: "[^"]*"', f'source: "{lmdb_path}"', text)


def run_net_text(text: str, directory: Path) -> None:
    """Build a TRAIN net from prototxt ``text`` and run one forward and backward."""
    from caffelite.net import Net

    path = directory / "mutated.prototxt"
    path.write_text(text)
    net = Net(str(path), 0)
    try:
        net.forward_backward()
    finally:
        net.close()


# ---- mutation strategies -------------------------------------------------------------------
def mutants(seed: bytes, text: bool):
    """A hypothesis strategy: ``seed`` after 1-4 hostile edits -- bytes flipped,
    inserted, deleted or repeated, the end cut off, and (for text) numbers of
    ``field: number`` entries set to odd values or arbitrary ones."""
    from hypothesis import strategies as st

    number = st.one_of(
        st.sampled_from(ODD_VALUES),
        st.integers(-(2**63), 2**64).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )

    @st.composite
    def build(draw):
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            kinds = ["flip", "insert", "delete", "repeat", "truncate"]
            if text:
                kinds += ["number"] * 5
            kind = draw(st.sampled_from(kinds))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "number":
                decoded = data.decode("latin-1")
                spans = numeric_spans(decoded)
                if spans:
                    index = draw(st.integers(0, len(spans) - 1))
                    changed = set_numbers(decoded, {index: draw(number)})
                    data = bytearray(changed.encode("latin-1"))
            elif kind == "flip" and data:
                data[at] = draw(st.integers(0, 255))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "delete":
                del data[at : at + draw(st.integers(1, 64))]
            elif kind == "repeat":
                length = draw(st.integers(1, 256))
                data[at:at] = data[at : at + length]
            elif kind == "truncate":
                del data[at:]
        return bytes(data)

    return build()


# ---- the property --------------------------------------------------------------------------
class PropertyViolation(AssertionError):
    """A loader answered hostile input with something other than CaffeliteError."""


def check_target(target, data) -> str:
    """Run ``target(data)`` under the fuzzing memory limit; "ok" or "error" (a
    CaffeliteError). Any other exception, or the process's peak resident memory
    growing by more than ALLOWED_PEAK_BYTES, raises PropertyViolation."""
    peak_before = _peak_rss()
    try:
        with limits.memory_limit(FUZZ_MEMORY_LIMIT):
            target(data)
        outcome = "ok"
    except CaffeliteError:
        outcome = "error"
    except Exception as exc:
        raise PropertyViolation(f"{target.__name__}: {type(exc).__name__}: {exc}"[:2000]) from exc
    grown = _peak_rss() - peak_before
    if grown > ALLOWED_PEAK_BYTES:
        raise PropertyViolation(f"{target.__name__}: peak memory grew by {grown} bytes")
    return outcome


def _peak_rss() -> int:
    """The process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """One scratch directory per process; each input overwrites the last one's files."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="caffelite-fuzz-")))
    return _SCRATCH[0]


def _write(directory: Path, name: str, payload: bytes) -> Path:
    path = directory / name
    path.write_bytes(payload)
    return path


# ---- seeds: small valid files --------------------------------------------------------------
def seed_net_prototxt() -> str:
    """LeNet's deploy net, with a batch of 2 so that each input runs in milliseconds."""
    text = (REPO / "models/lenet/lenet.prototxt").read_text()
    return text.replace("shape: { dim: 64", "shape: { dim: 2")


def seed_solver_prototxt() -> str:
    return (REPO / "models/lenet/lenet_solver.prototxt").read_text()


def _small_net():
    from caffelite.net import Net

    return Net(str(REPO / "tests/fuzz_small_net.prototxt"), 1)


def seed_caffemodel() -> bytes:
    return _small_net().to_proto().SerializeToString()


def seed_solverstate() -> bytes:
    from caffelite.proto import caffe_pb2

    net = _small_net()
    state = caffe_pb2.SolverState(iter=10, current_step=0)
    state.history.extend(b.to_proto() for layer in net.layers for b in layer.blobs)
    return state.SerializeToString()


def seed_datum() -> bytes:
    from caffelite.proto import caffe_pb2

    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).tobytes()
    return caffe_pb2.Datum(channels=2, height=3, width=4, data=pixels, label=3).SerializeToString()


def seed_idx_images() -> bytes:
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") * 2
    return header + bytes(range(18))


def seed_mnist_csv() -> bytes:
    rows = ["7," + ",".join(str(v) for v in range(9)), "1," + ",".join("0" * 9)]
    return ("\n".join(rows) + "\n").encode()


def seed_hdf5() -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["data"] = np.arange(4 * 1 * 2 * 2, dtype=np.float32).reshape(4, 1, 2, 2)
        handle["label"] = np.arange(4, dtype=np.float32)
    return buffer.getvalue()


def seed_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, "PNG")
    return buffer.getvalue()


# ---- targets: bytes -> one loader ----------------------------------------------------------
def load_net_prototxt(payload: bytes) -> None:
    """A NetParameter prototxt: parse, build the TEST net, forward and backward."""
    directory = _scratch()
    from caffelite.net import Net

    net = Net(str(_write(directory, "net.prototxt", payload)), 1)
    net.forward_backward()


def load_solver_prototxt(payload: bytes) -> None:
    """A SolverParameter prototxt, its net replaced by the small test net: build the
    solver and apply one update (a step without the test pass, whose length is the
    user's test_iter)."""
    directory = _scratch()
    from caffelite.solver import get_solver

    path = _write(directory, "solver.prototxt", payload)
    text = path.read_bytes()
    text = re.sub(rb'net: "[^"]*"', f'net: "{REPO}/tests/fuzz_small_net.prototxt"'.encode(), text)
    text = re.sub(rb'snapshot_prefix: "[^"]*"', f'snapshot_prefix: "{directory}/s"'.encode(), text)
    path.write_bytes(text)
    solver = get_solver(str(path))
    solver.net.forward_backward()
    solver.apply_update()


def load_caffemodel(payload: bytes) -> None:
    directory = _scratch()
    _small_net().copy_from(str(_write(directory, "w.caffemodel", payload)))


def load_solverstate(payload: bytes) -> None:
    from caffelite.solver import get_solver

    directory = _scratch()
    solver_path = _write(
        directory,
        "solver.prototxt",
        f'net: "{REPO}/tests/fuzz_small_net.prototxt" base_lr: 0.01 max_iter: 1 '
        f'snapshot_prefix: "{directory}/s"'.encode(),
    )
    solver = get_solver(str(solver_path))
    solver.restore(str(_write(directory, "s.solverstate", payload)))


def load_datum(payload: bytes) -> None:
    """One Datum record as the Data layer's reader decodes it."""
    from caffelite.layers.data import _decode_batch

    _decode_batch([payload], [b"00000000"], "fuzz.lmdb")


def load_idx(payload: bytes) -> None:
    from caffelite.mnist import read_idx

    read_idx(str(_write(_scratch(), "images-idx3-ubyte", payload)))


def load_mnist_csv(payload: bytes) -> None:
    from caffelite.mnist import read_mnist_csv

    read_mnist_csv(str(_write(_scratch(), "mnist.csv", payload)), rows=3, cols=3)


def _list_fed_net(payload: bytes, name: str, list_entry: str, layer: str):
    """A TEST net of one data layer reading a list file that names ``payload`` (saved as
    ``name``); ``layer`` is the layer's prototxt with ``{list}`` for the list's path."""
    from caffelite.net import Net

    directory = _scratch()
    data = _write(directory, name, payload)
    listing = _write(directory, "list.txt", f"{data}{list_entry}\n".encode())
    net = _write(directory, "net.prototxt", layer.replace("{list}", str(listing)).encode())
    return Net(str(net), 1)


def load_hdf5_data(payload: bytes) -> None:
    """An HDF5Data source file: set up the layer on it and serve two batches."""
    net = _list_fed_net(
        payload,
        "data.h5",
        "",
        'layer { name: "d" type: "HDF5Data" top: "data" top: "label" '
        'hdf5_data_param { source: "{list}" batch_size: 3 } }',
    )
    net.forward()
    net.forward()


def load_image(payload: bytes) -> None:
    """An image file as ImageData reads it (decoded and resized to 8x8)."""
    net = _list_fed_net(
        payload,
        "image.png",
        " 1",
        'layer { name: "d" type: "ImageData" top: "data" top: "label" '
        'image_data_param { source: "{list}" batch_size: 1 new_height: 8 new_width: 8 } }',
    )
    net.forward()


#: name -> (target, seed factory, whether the seed is text).
TARGETS = {
    "net_prototxt": (load_net_prototxt, lambda: seed_net_prototxt().encode(), True),
    "solver_prototxt": (load_solver_prototxt, lambda: seed_solver_prototxt().encode(), True),
    "caffemodel": (load_caffemodel, seed_caffemodel, False),
    "solverstate": (load_solverstate, seed_solverstate, False),
    "datum": (load_datum, seed_datum, False),
    "hdf5_data": (load_hdf5_data, seed_hdf5, False),
    "mnist_idx": (load_idx, seed_idx_images, False),
    "mnist_csv": (load_mnist_csv, seed_mnist_csv, True),
    "image_data": (load_image, seed_png, False),
}


def cleanup_scratch() -> None:
    """Remove this process's scratch directory."""
    import shutil

    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


__all__ = [
    "ODD_VALUES",
    "TARGETS",
    "PropertyViolation",
    "check_target",
    "cleanup_scratch",
    "lenet_train_text",
    "make_lmdb",
    "numeric_spans",
    "run_net_text",
    "set_numbers",
]
