#!/usr/bin/env bash
# The main job: set up .venv, then the whole recipe on the built-in generated corpus
# (generate -> prepare -> train thin-ResNet34 + FEFA(S) -> verify -> export -> load with
# SpeechBrain -> attention plot). Outputs in demo_output/. Options: see
# recipes/VoxCeleb/FEFA/demo.py (e.g. --fefa=none, --epochs=N).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$VENV_PY" recipes/VoxCeleb/FEFA/demo.py "$@"
