"""Round-robin record dealing (Caffe's DataLayer::Skip) in Data, HDF5Data and ImageData:
rank r of N reads records r, r+N, ..., so one iteration of N ranks at batch b reads
exactly the records one process reads at batch N*b, across wraps and file ends."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import mnist
from caffelite.layer import TEST
from caffelite.testing import build_layer

RANKS, BATCH, ITERATIONS = 3, 2, 4
RECORDS = 10  # not a multiple of RANKS * BATCH: every rank wraps mid-batch


def labels_read(text: str, phase: int = 0) -> list[list[float]]:
    layer, bottom, top = build_layer(text, [], num_top=2, phase=phase, dtype=np.float32)
    try:
        batches = []
        for _ in range(ITERATIONS):
            layer.reshape(bottom, top)
            layer.forward(bottom, top)
            batches.append(top[1].data.tolist())
        return batches
    finally:
        if hasattr(layer, "close"):
            layer.close()


def check_dealing(as_solver, make_text):
    """Each rank reads its stream positions; together they read one big batch's records."""
    as_solver(0, 1)
    alone = labels_read(make_text(RANKS * BATCH))
    stream = [label for batch in alone for label in batch]
    per_rank = []
    for rank in range(RANKS):
        as_solver(rank, RANKS)
        per_rank.append(labels_read(make_text(BATCH)))
        positions = range(rank, RANKS * BATCH * ITERATIONS, RANKS)
        assert [x for b in per_rank[rank] for x in b] == [stream[i] for i in positions]
    for i in range(ITERATIONS):
        together = sorted(x for rank in range(RANKS) for x in per_rank[rank][i])
        assert together == sorted(alone[i])


def test_data_layer_deals_lmdb_records(tmp_path, as_solver):
    images = np.zeros((RECORDS, 1, 2, 2), dtype=np.uint8)
    source = tmp_path / "lmdb"
    mnist.write_lmdb(source, images, np.arange(RECORDS))
    check_dealing(
        as_solver,
        lambda b: f'type: "Data" data_param {{ source: "{source}" batch_size: {b} backend: LMDB }}',
    )


def test_hdf5_data_deals_rows_across_files(tmp_path, as_solver):
    h5py = pytest.importorskip("h5py")
    files = []
    for name, rows in (("a", range(0, 4)), ("b", range(4, 5)), ("c", range(5, RECORDS))):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = np.zeros((len(rows), 2))
            f["label"] = np.asarray(rows, dtype=np.float64)
        files.append(str(path))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(files) + "\n")
    check_dealing(
        as_solver,
        lambda b: (
            f'type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{listing}" batch_size: {b} }}'
        ),
    )


def test_image_data_deals_lines(tmp_path, as_solver):
    image_module = pytest.importorskip("PIL.Image")
    lines = []
    for i in range(RECORDS):
        image_module.fromarray(np.full((2, 2), i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{tmp_path / f'{i}.png'} {i}")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    check_dealing(
        as_solver,
        lambda b: (
            f'type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{listing}" batch_size: {b} is_color: false }}'
        ),
    )


def test_test_nets_read_every_record_on_any_rank(tmp_path, as_solver):
    images = np.zeros((RECORDS, 1, 2, 2), dtype=np.uint8)
    source = tmp_path / "lmdb"
    mnist.write_lmdb(source, images, np.arange(RECORDS))
    text = f'type: "Data" data_param {{ source: "{source}" batch_size: 5 backend: LMDB }}'
    as_solver(2, RANKS)
    assert labels_read(text, TEST)[:2] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
