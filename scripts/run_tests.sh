#!/usr/bin/env bash
# Set up from nothing (virtual environment, dependencies), lint, type-check, build the docs site
# strictly (a broken link, anchor or docstring fails; the site goes to a temporary folder) and run the tests.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -m slow` or `bash scripts/run_tests.sh -n 0 tests/rl`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check mtrl envs agents scripts tests docs
.venv/bin/mypy
SITE_DIR=$(mktemp -d)
trap 'rm -rf "$SITE_DIR"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$SITE_DIR"  # not --quiet: it hides the warnings --strict counts
# One test process per core (pytest-xdist), each test file on one of them (--dist loadfile: a file's module
# fixtures, such as the MT10 envs or the local Ray cluster, are built once); pass `-n 0` to run in this process.
.venv/bin/python -m pytest -n auto --dist loadfile "$@"
