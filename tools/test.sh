#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the test suite (long runs skipped;
# pass --runslow for the full 10,000-iteration LeNet training). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup_env.sh
exec .venv/bin/python -m pytest -W error "$@"
