"""The demo driver (``bash scripts/demo.sh`` runs it): every step on a tiny corpus.

The real demo (100 speakers, 20 epochs) takes minutes; here the same driver runs with
options a user could pass (fewer speakers, one epoch, a narrower model), and the test
checks what the driver promises: every step ran, every output it lists exists, the EER
line is printed, the exported folder scores through SpeechBrain, and options given
after the driver's own replace its training defaults instead of clashing with them.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "VoxCeleb" / "FEFA" / "demo.py"
# Training options the test gives after the driver's own, to keep the run short.
TINY_TRAINING = ["--width=0.125", "--sentence_len=1.0", "--batch_size=4"]


def _demo_module():
    spec = importlib.util.spec_from_file_location("fefa_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_later_options_replace_the_demo_defaults():
    merged = _demo_module().merged_overrides(
        ["--width=0.25", "--lr=0.003", "--num_workers=0"], ["--lr=0.01", "--seed=7"]
    )
    assert merged == ["--width=0.25", "--num_workers=0", "--lr=0.01", "--seed=7"]


@pytest.mark.parametrize("fefa", ["single", "none"])
def test_demo_runs_every_step_and_lists_its_outputs(tmp_path, fefa):
    command = [
        sys.executable, str(DEMO), f"--fefa={fefa}", f"--output={tmp_path / 'demo'}",
        "--speakers=5", "--test-speakers=2", "--sessions=2", "--utts=3", "--min-dur=1.5",
        "--max-dur=2.5", "--epochs=1",
        *TINY_TRAINING,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    steps = [1, 2, 3, 4, 5] + ([6] if fefa != "none" else [])
    for step in steps:
        assert f"\n[{step}] " in output, f"step {step} missing:\n{output[-3000:]}"
    assert ("[6]" in output) == (fefa != "none")
    scored = re.findall(
        r"(same speaker|different speakers) .*: cosine (-?[\d.]+), "
        r"same speaker \(cosine >= (-?[\d.]+), the EER threshold\): (True|False)",
        output,
    )
    assert [kind for kind, *_ in scored] == ["same speaker", "different speakers"], output[-3000:]
    assert all(-1.0 <= float(score) <= 1.0 for _, score, _, _ in scored)

    listed = re.findall(r"^  [\w ]+:\s+(/\S+)", output, flags=re.M)
    assert len(listed) >= 6 and all(Path(path).exists() for path in listed), listed
    experiment = tmp_path / "demo" / "train" / f"thin_resnet34_tap_fefa_{fefa}"
    results = json.loads((experiment / "verification" / "results.json").read_text())
    # The pairs are decided with the EER threshold of the verification step.
    for _, score, threshold, decision in scored:
        assert float(threshold) == pytest.approx(results["eer_threshold"], abs=6e-4)
        if abs(float(score) - results["eer_threshold"]) > 1e-3:
            assert (decision == "True") == (float(score) >= results["eer_threshold"])
    eer = re.search(r"^EER ([\d.]+)%", output, flags=re.M)
    assert eer and float(eer.group(1)) == pytest.approx(100 * results["eer"], abs=0.006)
    manifest = json.loads((tmp_path / "demo" / "corpus" / "synthetic_manifest.json").read_text())
    assert (manifest["config"]["min_duration"], manifest["config"]["max_duration"]) == (1.5, 2.5)
    hparams = (experiment / "hyperparams.yaml").read_text()
    # Every training option reaches the recipe: the test's own, and the driver's defaults
    # that they did not replace.
    expected = dict(option[2:].split("=", 1) for option in _demo_module().DEMO_TRAINING)
    expected.update(option[2:].split("=", 1) for option in TINY_TRAINING)
    for key, value in expected.items():
        saved = re.search(rf"^{key}: (\S+)", hparams, flags=re.M)
        assert saved, f"{key} missing from hyperparams.yaml"
        assert yaml.safe_load(saved.group(1)) == yaml.safe_load(value), (key, saved.group(1))
