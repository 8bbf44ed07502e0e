#!/usr/bin/env bash
# One command: set up (idempotent) and run `voxfleet serve` with the offline assistant.
# Extra arguments go to `voxfleet serve` (e.g. --host 0.0.0.0 --port 7860).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/voxfleet serve "$@"
