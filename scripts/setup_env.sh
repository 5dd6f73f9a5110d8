#!/usr/bin/env bash
# Creates .venv (if missing) and installs the package into it, once per setup.py version.
# Sourced by scripts/demo.sh and scripts/test.sh; leaves VENV_PY set to the venv's python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEFA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.fefa_installed"
want="$(cat "$ROOT/setup.py" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing fefa_speechbrain and its dependencies (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test,onnx]"
  echo "$want" > "$stamp"
fi
VENV_PY="$VENV/bin/python"
export VENV_PY
