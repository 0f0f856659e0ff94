#!/usr/bin/env bash
# The test command: set up .venv if needed, lint, then run the test suite (long runs
# skipped; pass --runslow for the full 10,000-iteration LeNet training). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup_env.sh
.venv/bin/ruff check caffelite tests tools benchmarks models
exec .venv/bin/python -m pytest -W error "$@"
