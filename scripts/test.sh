#!/usr/bin/env bash
# The whole test suite (unit tests, doctests, recipe tests), after setting up .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$VENV_PY" -m pytest "$@"
