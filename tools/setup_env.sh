#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv with caffelite installed
# editable, plus the test tools. Safe to run again: it only installs what is missing.
# pip's output goes to .venv/install.log and is shown only if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import caffelite, pytest, lmdb, h5py, PIL" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.installed ]; then
    echo "Installing caffelite and its dependencies into .venv (log: .venv/install.log)"
    if ! { .venv/bin/python -m pip install --upgrade pip \
        && .venv/bin/python -m pip install -e ".[dev]"; } > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "setup failed: see the pip output above" >&2
        exit 1
    fi
    touch .venv/.installed
fi
