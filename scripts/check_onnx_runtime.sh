#!/usr/bin/env bash
# The ONNX graph without torch: a fresh virtual environment (no --system-site-packages)
# gets onnxruntime, numpy and soundfile from the package index and nothing else, then
# tests/test_onnx_runtime.py exports the shipped model's graph with the project venv and
# runs the torch-free snippet of docs/deployment.md, as written, with that environment's
# python. Measured on a 2-core machine: 42 s (venv and pip ~28 s, the test ~13 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fefa-ort-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$VENV_PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q onnxruntime numpy soundfile
if "$WORK/venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "check_onnx_runtime: the fresh venv imports torch: not torch-free" >&2
  exit 1
fi
cd "$ROOT"
FEFA_ORT_PYTHON="$WORK/venv/bin/python" "$VENV_PY" -m pytest -q -p no:cacheprovider \
  tests/test_onnx_runtime.py -rs
echo "check_onnx_runtime passed: $("$WORK/venv/bin/python" -m pip list --format=freeze | tr '\n' ' ')"
