#!/usr/bin/env bash
# Download, on a machine with network, the wheels that benchmarks/gpu_check.sh installs on
# an offline GPU machine (Python 3.12, x86-64 Linux) whose image lacks them:
#   tools/fetch_gpu_wheels.sh [DIR]        (default .whl, ignored by git: never commit it)
# The GPU image already has numpy, numba, numba-cuda, CuPy, h5py, tqdm, Pillow and PyTorch;
# it lacks lmdb, and its protobuf may be older than caffelite/proto/caffe_pb2.py needs
# (gpu_check.sh installs protobuf only then). Extra arguments are more requirements
# (e.g. "plyvel>=1.5" for LevelDB sources).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
[ $# -gt 0 ] && shift
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p "$DIR"
# one pinned version of each, so that two can never be offered to pip at once
PROTOBUF=$($PY -c "from importlib.metadata import version; print(version('protobuf'))")
LMDB=$($PY -c "from importlib.metadata import version; print(version('lmdb'))")
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DIR" "lmdb==$LMDB" "protobuf==$PROTOBUF" "$@"
ls -l "$DIR"
