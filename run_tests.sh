#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (CPU only; real-data tests skip without ../shared).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
