#!/usr/bin/env bash
# Set up from nothing (virtual environment, dependencies), lint, type-check and run the tests.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check mtrl envs agents scripts tests
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
