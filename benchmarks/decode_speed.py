"""How fast the Data layer decodes encoded (JPEG) Datums, against how fast training eats them.

    python benchmarks/decode_speed.py [--images 512] [--seconds 8] [--threads 1,2]
                                      [--skip-training]

Builds, in a temporary directory, an LMDB of ``--images`` encoded 256x256 colour JPEGs
(OpenCV's quality 95, as ``convert_imageset --encoded`` writes them) made from real MNIST
digits: ten digits per image, upscaled, tinted and composited over a colour gradient
with an eleventh digit as faint texture, so the JPEGs hold edges and smooth areas rather
than noise. Then, for each decode thread count (``CAFFELITE_DECODE_THREADS``):

* decode: the Data layer's decode path (``_decode_batch``: parse the Datums, decode on
  the shared pool) over batches of 64 records, images per second;
* Data layer: a TRAIN ``Data`` layer (crop 227, mirror, mean values: CaffeNet's
  transform) fed by its prefetch thread, ``forward`` called back to back, images per
  second: the most a training loop could draw from it.

And what training consumes (unless ``--skip-training``), measured here in fresh
processes by benchmarks/speed_worker.py at 1 BLAS thread: LeNet's train step at batch 64
(64 / step time) and CaffeNet's forward + backward at batch 8 (8 / time; a solver's
update adds little to it). For a GPU, Caffe's own figure is quoted: 4 ms per image to
train CaffeNet on a K40 (caffe.berkeleyvision.org), 250 images/s; current GPUs are
several times faster. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

MNIST = REPO.parent / "shared" / "data" / "mnist"
SIZE = 256
BATCH = 64
K40_CAFFENET_TRAIN_IMAGES_PER_S = 1000 / 4  # Caffe's "4 ms/image for learning"


def composite_images(count: int, seed: int = 0):
    """``count`` uint8 (3, 256, 256) BGR images and labels (the first digit's class)."""
    from caffelite.image_codec import resize_pixels
    from caffelite.mnist import load_mnist

    digits, labels = load_mnist(
        MNIST / "train-images-idx3-ubyte.gz", MNIST / "train-labels-idx1-ubyte.gz"
    )
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    for _ in range(count):
        picks = rng.choice(len(digits), 11, replace=False)
        top, bottom = rng.uniform(20, 235, (2, 3, 1, 1)).astype(np.float32)
        angle = rng.uniform(0, 1)
        blend = angle * ramp[:, None] + (1 - angle) * ramp[None, :]
        canvas = top + (bottom - top) * blend[None]
        texture = resize_pixels(digits[picks[10]][None], SIZE, SIZE)[0] / np.float32(255)
        canvas *= 1 - 0.25 * texture[None]
        for digit in picks[:10]:
            side = int(rng.integers(40, 150))
            alpha = resize_pixels(digits[digit][None], side, side)[0] / np.float32(255)
            y, x = rng.integers(0, SIZE - side, 2)
            tint = rng.uniform(0, 255, (3, 1, 1)).astype(np.float32)
            patch = canvas[:, y : y + side, x : x + side]
            patch += alpha[None] * (tint - patch)
        yield np.clip(np.rint(canvas), 0, 255).astype(np.uint8), int(labels[picks[0]])


def build_lmdb(path: Path, count: int) -> int:
    """Write the encoded Datums with convert_imageset's keys; returns the bytes written."""
    from caffelite import db
    from caffelite.image_codec import encode_image
    from caffelite.proto import caffe_pb2

    total = 0
    with db.Writer(path, db.LMDB) as writer:
        for i, (pixels, label) in enumerate(composite_images(count)):
            jpeg = encode_image(pixels, "jpg")
            total += len(jpeg)
            datum = caffe_pb2.Datum(
                channels=3, height=SIZE, width=SIZE, data=jpeg, label=label, encoded=True
            )
            writer.put(f"{i:08d}_composite{i}.jpg", datum.SerializeToString())
    return total


def rate(function, images_per_call: int, seconds: float) -> float:
    """Images per second of ``function`` called for about ``seconds`` after one warm-up."""
    function()
    calls, start = 0, time.perf_counter()
    while True:
        function()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * images_per_call / elapsed


def decode_rate(path: Path, seconds: float) -> float:
    from caffelite import db
    from caffelite.layers.data import _decode_batch

    records = list(db.read_records(str(path)))
    batches = [records[k : k + BATCH] for k in range(0, len(records) - BATCH + 1, BATCH)]
    position = [0]

    def one_batch():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        images, _ = _decode_batch([v for _, v in batch], [k for k, _ in batch], str(path))
        assert images.shape == (BATCH, 3, SIZE, SIZE)

    return rate(one_batch, BATCH, seconds)


def data_layer_rate(path: Path, seconds: float) -> float:
    from caffelite.testing import build_layer

    text = (
        f'type: "Data" data_param {{ source: "{path}" backend: LMDB batch_size: {BATCH} }} '
        "transform_param { crop_size: 227 mirror: true "
        "mean_value: 104 mean_value: 117 mean_value: 123 }"
    )
    layer, bottom, top = build_layer(text, [], num_top=2, dtype=np.float32)
    try:
        return rate(lambda: layer.forward(bottom, top), BATCH, seconds)
    finally:
        layer.close()


def training_rates(directory: Path) -> dict[str, float]:
    from speed_table import random_weights, worker

    lenet = worker("caffelite", "lenet_train", 20, 1)
    weights = random_weights(directory, "bvlc_reference_caffenet")
    caffenet = worker("caffelite", "bvlc_reference_caffenet:backward:8", 2, 1, weights)
    return {
        "LeNet train step, batch 64, CPU 1 thread": 64 / (np.median(lenet["times_ms"]) / 1000),
        "CaffeNet forward+backward, batch 8, CPU 1 thread": 8
        / (np.median(caffenet["times_ms"]) / 1000),
        "CaffeNet training on a K40 GPU (Caffe's published 4 ms/image)": (
            K40_CAFFENET_TRAIN_IMAGES_PER_S
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--threads", default="1,2", help="decode thread counts to try")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    if args.images < BATCH:
        raise SystemExit(f"--images must be at least {BATCH}")
    counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "jpeg_lmdb"
        start = time.perf_counter()
        jpeg_bytes = build_lmdb(path, args.images)
        print(
            f"{args.images} JPEGs {SIZE}x{SIZE}, mean {jpeg_bytes / args.images / 1024:.1f} KiB, "
            f"written in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs"
        )
        print("| decode threads | decode (images/s) | Data layer + transform (images/s) |")
        print("| ---: | ---: | ---: |")
        for threads in counts:
            os.environ["CAFFELITE_DECODE_THREADS"] = str(threads)
            decoded = decode_rate(path, args.seconds)
            served = data_layer_rate(path, args.seconds)
            print(f"| {threads} | {decoded:,.0f} | {served:,.0f} |")
        if not args.skip_training:
            print("\n| training consumes | images/s |")
            print("| --- | ---: |")
            for name, value in training_rates(tmp).items():
                print(f"| {name} | {value:,.1f} |")


if __name__ == "__main__":
    main()
