#!/usr/bin/env bash
# The main job on the built-in generated corpus (placeholder until the recipe lands).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
"$VENV_PY" -c "import fefa_speechbrain, torch; from fefa_speechbrain.fefa import FEFA; print('fefa_speechbrain', fefa_speechbrain.__version__, 'FEFA params:', sum(p.numel() for p in FEFA(257).parameters()))"
