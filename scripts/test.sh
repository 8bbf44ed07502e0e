#!/usr/bin/env bash
# One command: set up (idempotent, with test extras) and run the whole test suite.
# Extra arguments go to pytest. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
mkdir -p test-artifacts
set +e
.venv/bin/python -m pytest -ra "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit $code
