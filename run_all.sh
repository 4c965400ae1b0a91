#!/usr/bin/env bash
# Set up .venv if needed, then run the whole study with papermill and render reports/<profile>/.
#   ./run_all.sh                       the synthetic default (no download, no GPU)
#   ./run_all.sh --profile ped2 --data-root PATH [--detector-weights W] [--epochs N]
#   ./run_all.sh --quick               a smoke run on tiny data (a few minutes)
#   ./run_all.sh --procs 2             every training with 2 processes (torchrun; SSMTL_PROCS for the notebooks)
# Goes on past a failing notebook, names it at the end and exits non-zero; a rerun skips unchanged steps.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
export PYTHONWARNINGS="ignore::UserWarning"
exec .venv/bin/python -m ssmtl_core.study "$@"
