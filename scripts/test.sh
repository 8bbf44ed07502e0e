#!/usr/bin/env bash
# One command: set up (idempotent, with test extras), lint (ruff), type-check (mypy: the pure cores,
# strictly; both configured in pyproject.toml) and run the whole test suite; a lint or type error
# fails it before any test runs. Extra arguments go to pytest. pytest's "no tests collected"
# (exit 5) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
mkdir -p test-artifacts
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -ra "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit $code
