#!/usr/bin/env bash
# GPU check of the model services (run on a machine with an NVIDIA GPU):
#   scripts/gpu_check.sh [MODELS_DIR] [extra args for scripts/gpu_check.py]
# Needs python3 with onnxruntime-gpu, numpy and msgpack. PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS_DIR="${1:-exported_models}"
shift || true
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "nvidia-smi not found" >&2
fi
exec "$PY" scripts/gpu_check.py "$MODELS_DIR" "$@"
