"""The torch-free snippet of docs/deployment.md, executed as written, on the shipped model's graph.

The snippet runs in a separate Python process whose imports of torch, torchaudio,
SpeechBrain and fefa_speechbrain fail, and its embeddings are compared with the PyTorch
model's. With ``FEFA_ORT_PYTHON`` set to the python of a fresh virtual environment holding
only onnxruntime, numpy and soundfile (``scripts/check_onnx_runtime.sh`` creates one; pip
takes ~30 s, so the suite does not), it also runs there.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "deployment.md"
MARK = "# torch-free: onnxruntime, numpy and soundfile only"
SHIPPED = ROOT / "pretrained" / "fefa-ecapa128-speechcommands"
BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "speechbrain", "fefa_speechbrain"):
            raise ImportError(f"{name} is not available here")
sys.meta_path.insert(0, Blocker())
"""
CHECK = """
np.save("embeddings.npy", np.stack([a, b, c]))
"""


def snippet():
    """The python block of the doc that starts with MARK, as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    marked = [block for block in blocks if block.startswith(MARK)]
    assert len(marked) == 1, f"{DOC}: one python block starting with {MARK!r}"
    return marked[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """model.onnx of the shipped model, and the example folder, as the snippet expects."""
    pytest.importorskip("onnxruntime")
    from fefa_speechbrain.cli import main

    work = tmp_path_factory.mktemp("deploy")
    (work / "pretrained").mkdir()
    os.symlink(SHIPPED, work / "pretrained" / SHIPPED.name)
    assert main(["export", str(SHIPPED), "--format", "onnx", "--output", str(work / "model.onnx")]) == 0
    return work


def expected_embeddings():
    from fefa_speechbrain.inference.embedder import SpeakerEmbedder
    from fefa_speechbrain.inference.model_source import load_model

    names = ("speaker1_down", "speaker1_go", "speaker2_left")
    files = [str(SHIPPED / "example" / f"{name}.flac") for name in names]
    embeddings = SpeakerEmbedder(load_model(str(SHIPPED)).modules).embed_files(files, 1)
    return torch.stack([embeddings[path] for path in files]).numpy()


def run_snippet(python, workdir, prelude=""):
    result = subprocess.run(
        [python, "-c", prelude + snippet() + CHECK], cwd=workdir, capture_output=True,
        text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual = np.load(workdir / "embeddings.npy")
    expected = expected_embeddings()
    assert np.abs(actual - expected).max() < 1e-5 * np.abs(expected).max()
    return result.stdout


def test_snippet_runs_without_torch(workdir):
    out = run_snippet(sys.executable, workdir, BLOCKER)
    assert out == "same speaker: cosine 0.59; different speakers: -0.08\n"
    assert "It prints `same speaker: cosine 0.59; different speakers: -0.08`" in DOC.read_text()


def test_snippet_in_a_fresh_venv(workdir):
    python = os.environ.get("FEFA_ORT_PYTHON")
    if not python:
        pytest.skip("FEFA_ORT_PYTHON not set: scripts/check_onnx_runtime.sh runs this in a fresh venv")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=60)
    assert probe.returncode != 0, f"{python} can import torch: not a torch-free environment"
    run_snippet(python, workdir)
