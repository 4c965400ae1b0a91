#!/usr/bin/env bash
# The GPU run (bench/gpu_run.py, whose docstring says how to build and carry its data):
#   bash bench/gpu_run.sh           on the GPU machine: smoke run, the paper's protocol for the four presets on
#                                   Ped2, scoring speed; results in $OUT/gpu.json (else bench/results/gpu.json)
#   bash bench/gpu_run.sh --dry     the same on the CPU on tiny data (about a minute), to check it
# Extra arguments go to `bench/gpu_run.py run` (e.g. --minutes 10, --archs shallow_narrow).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
results="bench/results/gpu.json"
if [ -n "${OUT:-}" ]; then results="$OUT/gpu.json"; fi
if [ "${1:-}" = "--dry" ]; then
    shift
    gpu="${SSMTL_GPU_DIR:-runs/gpu-dry}"  # ignored, and never carried
    [ -f "$gpu/tiny/bundle.json" ] || "$PY" bench/gpu_run.py prepare --dry --out "$gpu" --cache "$gpu/cache" \
        --tiny-root "$gpu/data/synthetic-tiny"
    exec "$PY" bench/gpu_run.py run --dry --gpu "$gpu" --runs "$gpu/runs" --results "${DRY_RESULTS:-$gpu/gpu.json}" "$@"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec "$PY" bench/gpu_run.py run --results "$results" "$@"
