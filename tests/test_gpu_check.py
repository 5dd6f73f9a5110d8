"""scripts/gpu_check.sh parses, and without a GPU it refuses cleanly (exit 3, one message)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_refuses_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run the script itself")
    env = {**os.environ, "VENV_PY": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.startswith("gpu_check: no CUDA GPU") and "nothing was run" in result.stderr
