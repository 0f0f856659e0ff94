#!/usr/bin/env bash
# The GPU check (issue 11) in one command, for a machine with an NVIDIA GPU and CuPy:
#   1. installs caffelite offline (pip --no-index --no-deps -e .) and, from WHEELS, the
#      runtime dependencies that machine lacks (lmdb; protobuf if older than caffe_pb2 needs);
#   2. runs the GPU tests (pytest -m gpu: the layer tests on the device, and the CUDA
#      kernels against their CPU twins, tests/kernels/test_cuda_twins.py);
#   3. trains LeNet 10,000 iterations with its tests (caffelite train --gpu 0) and checks
#      the final test accuracy >= 0.99;
#   4. times the LeNet train step, its CUDA-graph form (where the solver offers one) and
#      ResNet-50 forward + backward at batch 32 against PyTorch eager on the same GPU;
# then prints one table. Each step has a time limit (the whole stays under 8 minutes);
# a failed step is reported in the table and the others still run.
#
#   benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--mnist DIR] [--results DIR]
#
# --wheels DIR  wheels for the missing dependencies (default .whl; make them on a machine
#               with network: tools/fetch_gpu_wheels.sh)
# --mnist DIR   the four MNIST .gz files (default ../shared/data/mnist; not needed when
#               data/mnist already holds the LMDBs)
# --results DIR where the logs and JSON results go (default build/gpu_check)
# --dry-run     no GPU needed: skips the install, runs every step on the CPU with a few
#               iterations (plumbing check; the numbers mean nothing)
# PYTHON        the interpreter (default: .venv/bin/python if present, else python3)
#
# On the device machine of this workplace (see DEVELOPERS.md): copy the MNIST .gz files
# into an ignored folder of the checkout (e.g. .mnist/), carry it and .whl, and run
#   benchmarks/gpu_check.sh --mnist .mnist --results $OUT
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
WHEELS=.whl
MNIST_SOURCE=../shared/data/mnist
RESULTS=build/gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --wheels) WHEELS=$2; shift ;;
        --mnist) MNIST_SOURCE=$2; shift ;;
        --results) RESULTS=$2; shift ;;
        *) echo "gpu_check: unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
PY=$PYTHON
TESTS_LIMIT=${TESTS_LIMIT:-170}
TRAIN_LIMIT=${TRAIN_LIMIT:-120}
BENCH_LIMIT=${BENCH_LIMIT:-150}
export PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
FAILED=()

step() { echo; echo "==== gpu_check: $* ($(date +%T))"; }

# ---- 0. a GPU? ---------------------------------------------------------------------------
if [ "$DRY_RUN" = 0 ]; then
    if ! $PY -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() == 0)" 2>/dev/null
    then
        echo "gpu_check: no CUDA device visible to CuPy with $PY (is CuPy installed, is there" \
            "an NVIDIA GPU and driver?). To check this script on a CPU: $0 --dry-run" >&2
        exit 2
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader
fi

# ---- 1. install, offline ---------------------------------------------------------------------
step "install"
NEEDED=$($PY benchmarks/gpu_check.py requirements) || exit 1
if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: would install from $WHEELS: ${NEEDED:-nothing}; and caffelite itself (-e .)"
else
    if [ -n "$NEEDED" ]; then
        echo "from $WHEELS: $NEEDED"
        # shellcheck disable=SC2086  # one word per requirement
        if ! $PY -m pip install -q --no-index --find-links "$WHEELS" --no-deps $NEEDED; then
            echo "gpu_check: $NEEDED not found in $WHEELS; make the wheels on a machine with" \
                "network: tools/fetch_gpu_wheels.sh $WHEELS" >&2
            exit 1
        fi
    fi
    if ! $PY -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-build-isolation \
        -e .; then
        echo "gpu_check: pip could not install caffelite (old setuptools?); using PYTHONPATH" >&2
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
$PY -c "import caffelite, lmdb" || exit 1

# ---- 2. the GPU tests ---------------------------------------------------------------------
step "GPU tests (pytest -m gpu, limit ${TESTS_LIMIT} s)"
timeout "$TESTS_LIMIT" $PY -m pytest -q -W error -p no:cacheprovider -m gpu tests \
    2>&1 | tee "$RESULTS/tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=("tests")

# ---- 3. LeNet, 10,000 iterations ------------------------------------------------------------
step "MNIST"
if [ ! -d data/mnist/mnist_train_lmdb ] || [ ! -d data/mnist/mnist_test_lmdb ]; then
    $PY tools/get_mnist.py --from "$MNIST_SOURCE" --out data/mnist || exit 1
    for split in train t10k; do
        name=$([ "$split" = train ] && echo train || echo test)
        $PY tools/convert_mnist_data.py "data/mnist/${split}-images-idx3-ubyte.gz" \
            "data/mnist/${split}-labels-idx1-ubyte.gz" "data/mnist/mnist_${name}_lmdb" || exit 1
    done
fi
step "LeNet training (limit ${TRAIN_LIMIT} s)"
DRY=()
[ "$DRY_RUN" = 1 ] && DRY=(--dry-run)
timeout "$TRAIN_LIMIT" $PY benchmarks/gpu_check.py train --results "$RESULTS" "${DRY[@]}" \
    || FAILED+=("LeNet training")

# ---- 4. timings -----------------------------------------------------------------------------
step "timings (limit ${BENCH_LIMIT} s)"
timeout "$BENCH_LIMIT" $PY benchmarks/gpu_check.py bench --results "$RESULTS" "${DRY[@]}" \
    || FAILED+=("timings")

step "results"
$PY benchmarks/gpu_check.py table --results "$RESULTS" | tee "$RESULTS/table.md"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "gpu_check: FAILED: ${FAILED[*]} (logs in $RESULTS)"
    exit 1
fi
echo "gpu_check: all checks passed"
