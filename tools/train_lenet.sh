#!/usr/bin/env bash
# The main job in one command: set up, get MNIST, convert it to LMDB, train LeNet with
# Caffe's lenet_solver.prototxt and print the test accuracy.
# MNIST is copied from ../shared/data/mnist when that directory exists, else downloaded.
# Extra arguments go to `caffelite train` (e.g. --solver models/lenet/lenet_solver_adam.prototxt).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup_env.sh
PY=.venv/bin/python
MNIST_SOURCE=${MNIST_SOURCE:-../shared/data/mnist}
if [ -d "$MNIST_SOURCE" ]; then
    $PY tools/get_mnist.py --from "$MNIST_SOURCE" --out data/mnist
else
    $PY tools/get_mnist.py --out data/mnist
fi
for split in train t10k; do
    name=$([ "$split" = train ] && echo train || echo test)
    if [ ! -d "data/mnist/mnist_${name}_lmdb" ]; then
        $PY tools/convert_mnist_data.py "data/mnist/${split}-images-idx3-ubyte.gz" \
            "data/mnist/${split}-labels-idx1-ubyte.gz" "data/mnist/mnist_${name}_lmdb"
    fi
done
case " $* " in
    *" --solver "* | *" -solver "* | *" --solver="* | *" -solver="*) ;;
    *) set -- --solver models/lenet/lenet_solver.prototxt "$@" ;;
esac
exec $PY -m caffelite train "$@"
