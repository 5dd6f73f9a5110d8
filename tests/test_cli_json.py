"""verify --json / --exit-code and score --json: one JSON object for scripts."""

import json
import os
import subprocess
import sys

import pytest


SHIPPED = os.path.join(os.path.dirname(__file__), "..", "pretrained", "fefa-ecapa128-speechcommands")
EXAMPLE = os.path.join(SHIPPED, "example")



@pytest.mark.parametrize("other, same", [("speaker1_go", True), ("speaker2_left", False)])
def test_verify_json_and_exit_code(run_cli, other, same):
    files = [f"{EXAMPLE}/speaker1_down.flac", f"{EXAMPLE}/{other}.flac"]
    status, out, err = run_cli("verify", SHIPPED, *files, "--json", "--threads", 1)
    assert status == 0, err
    result = json.loads(out)  # one object, nothing else on stdout
    config = json.load(open(os.path.join(SHIPPED, "config.json")))
    assert result["threshold_name"] == "eer"
    assert result["threshold"] == config["thresholds"]["eer"]["value"]
    assert result["threshold_description"] == config["thresholds"]["eer"]["description"]
    assert result["same_speaker"] is same and (result["score"] >= result["threshold"]) is same
    assert result["decision"] == ("same speaker" if same else "different speakers")
    status, out, _ = run_cli("verify", SHIPPED, *files, "--exit-code", "--threads", 1)
    assert status == (0 if same else 2) and out.startswith(result["decision"])
    status, out, _ = run_cli("verify", SHIPPED, *files, "--json", "--threshold=-1")
    assert status == 0 and json.loads(out)["threshold_name"] is None


def test_score_json(run_cli, tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 speaker1_down.flac speaker1_go.flac\n0 speaker1_down.flac speaker2_left.flac\n")
    status, out, err = run_cli("score", SHIPPED, trials, "--audio-root", EXAMPLE,
                           "--output", tmp_path / "scores.txt", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["trials"] == summary["scored"] == 2 and summary["eer"] == 0.0
    assert summary["n_target"] == summary["n_nontarget"] == 1
    assert summary["output"] == str(tmp_path / "scores.txt")


def test_exit_code_from_the_console():
    result = subprocess.run(
        [sys.executable, "-m", "fefa_speechbrain", "verify", SHIPPED, f"{EXAMPLE}/speaker1_down.flac",
         f"{EXAMPLE}/speaker2_left.flac", "--exit-code", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and result.stdout.startswith("different speakers")
