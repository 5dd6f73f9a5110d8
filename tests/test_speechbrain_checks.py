"""SpeechBrain's own recipe checks on this recipe: yaml keys used by the scripts, yamls load.

The third check (``run``: every row of tests/recipes/VoxCeleb.csv) runs in ``.ci/run``;
tests/test_recipe.py runs the same rows here. Skipped where the shared tools are absent.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO.parent / "shared" / "tools" / "speechbrain-checks" / "run.sh"


@pytest.mark.skipif(not CHECKS.is_file(), reason=f"{CHECKS} not found")
@pytest.mark.parametrize("check", ["yaml", "load"])
def test_speechbrain_recipe_check(check):
    env = dict(os.environ, PY=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", str(CHECKS), check], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
