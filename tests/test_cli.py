"""The command line on an exported folder with stored thresholds: embed, score, verify, export.

Every number is checked against the package's own PyTorch path on the training run the
folder was exported from.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fefa_speechbrain.cli import main
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.inference.embedding_files import read_embeddings
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, load_experiment
from fefa_speechbrain.evaluation.metrics import (
    between_scores,
    false_accept_threshold,
    verification_report,
)
from fefa_speechbrain.evaluation.verification import cosine_scores
from test_model_source import export_of
from test_robustness import FILES, make_experiment, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    trials_file = write_corpus(str(root / "audio"))
    experiment = make_experiment(root / "experiment", "single", 4)
    folder = export_of(experiment, root / "pretrained", threshold_trials=trials_file)
    hparams, _ = load_experiment(experiment)
    trials = read_trials(trials_file)
    embeddings = SpeakerEmbedder(hparams["modules"]).embed_files(trial_files(trials), 4)
    scores = cosine_scores(embeddings, trials)
    return {
        "root": root, "audio": str(root / "audio"), "trials_file": trials_file, "trials": trials,
        "pretrained": str(folder), "embeddings": embeddings, "scores": scores,
    }


def run(capsys, *argv):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_thresholds_stored_and_no_local_paths(setup):
    config = json.loads(open(os.path.join(setup["pretrained"], "config.json")).read())
    labels = np.array([trial.label for trial in setup["trials"]])
    expected = verification_report(setup["scores"], labels)
    thresholds = config["thresholds"]
    raw = {"eer": expected["eer_threshold"],
           "far_1pct": false_accept_threshold(setup["scores"], labels, 0.01)[0]}
    scores = np.asarray(setup["scores"], dtype=np.float64)
    for name, value in raw.items():
        stored = thresholds[name]["value"]
        assert stored == pytest.approx(between_scores(scores, value), abs=1e-9)
        # the same decision on every trial as the raw threshold, and no score on it
        assert ((scores >= stored) == (scores >= value)).all()
        assert np.abs(scores - stored).min() > 1e-7
    # no training CSV to compare with: the description says the speakers were not checked
    assert thresholds["eer"]["description"].startswith(
        "EER threshold on trials of 3 speakers (not compared with the training speakers): trials.txt")
    assert thresholds["trials"] == {"name": "trials.txt", "n_target": 3, "n_nontarget": 12,
                                    "speakers": "unchecked", "n_speakers": 3}
    for name in os.listdir(setup["pretrained"]):
        text = open(os.path.join(setup["pretrained"], name), "rb").read().decode("utf-8", "replace")
        assert str(setup["root"]) not in text and "/tmp/" not in text, name
    card = open(os.path.join(setup["pretrained"], "README.md")).read()
    assert card.startswith("---\nlibrary_name: speechbrain\nlicense: apache-2.0\n")
    assert "pip install fefa_speechbrain" in card and "trust" in card
    assert thresholds["eer"]["description"] in card


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_embed_folder_npy(setup, capsys, tmp_path, backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    output = tmp_path / "emb.npy"
    status, out, err = run(capsys, "embed", setup["pretrained"], setup["audio"], "--output",
                           output, "--batch-size", 4, "--backend", backend, "--threads", 1)
    assert status == 0, err
    rows, matrix = read_embeddings(output)  # the index is checked against the matrix
    assert (tmp_path / "emb.txt").read_text().split("\n")[1:-1] == rows
    assert sorted(os.path.relpath(path, setup["audio"]) for path in rows) == sorted(FILES)
    np.testing.assert_array_equal(matrix, np.load(output))
    expected = np.stack([setup["embeddings"][path].numpy() for path in rows])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    assert "6 embeddings of 32 dimensions" in out and "embedding: 6/6 files" in err


def test_embed_list_pt(setup, capsys, tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text(f"{setup['audio']}/spk1/a.wav\n{setup['audio']}/spk2/b.wav\n")
    status, _, err = run(capsys, "embed", setup["pretrained"], listing, "--output", tmp_path / "e.pt")
    assert status == 0, err
    saved = torch.load(tmp_path / "e.pt")
    assert sorted(saved) == sorted(f"{setup['audio']}/{name}" for name in ("spk1/a.wav", "spk2/b.wav"))
    for path, embedding in saved.items():
        assert torch.allclose(embedding, setup["embeddings"][path], atol=1e-5)


def test_score(setup, capsys, tmp_path):
    output = tmp_path / "scores.txt"
    # the synthetic corpus is not all speech to voice activity: scored without the check
    status, out, err = run(capsys, "score", setup["pretrained"], setup["trials_file"],
                           "--audio-root", setup["audio"], "--output", output, "--no-speech-check")
    assert status == 0, err
    written = np.array([float(line.split()[3]) for line in output.read_text().splitlines()])
    np.testing.assert_allclose(written, setup["scores"], atol=1e-5)
    labels = [trial.label for trial in setup["trials"]]
    eer = verification_report(setup["scores"], labels)["eer"]
    assert f"EER {100 * eer:.2f} %" in out and "(3 target / 12 non-target trials)" in out


def test_verify_uses_and_names_stored_threshold(setup, capsys):
    config = json.loads(open(os.path.join(setup["pretrained"], "config.json")).read())
    stored = [config["thresholds"][name]["value"] for name in ("eer", "far_1pct")]
    # the trial farthest from both thresholds: float noise between embedding paths
    # cannot decide it (no tie)
    margins = [min(abs(float(score) - value) for value in stored) for score in setup["scores"]]
    index = int(np.argmax(margins))
    assert margins[index] > 1e-4
    trial, score = setup["trials"][index], float(setup["scores"][index])
    for name in ("eer", "far_1pct"):
        threshold = config["thresholds"][name]["value"]
        status, out, err = run(capsys, "verify", setup["pretrained"], trial.enrol, trial.test,
                               "--threshold-name", name)
        assert status == 0, err
        verdict = "same speaker" if score >= threshold else "different speakers"
        assert out.startswith(f"{verdict}: cosine {score:.4f}")
        assert config["thresholds"][name]["description"] in out
    status, out, _ = run(capsys, "verify", setup["pretrained"], trial.enrol, trial.test,
                         "--threshold=-1")
    assert out.startswith("same speaker") and "given with --threshold" in out


def test_export_onnx_matches(setup, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    from fefa_speechbrain.data.audio import load_audio
    from fefa_speechbrain.inference.model_source import load_model
    from fefa_speechbrain.graph_export import WaveformGraphModel
    from fefa_speechbrain.graph_front_end import describe_preprocessing

    output = tmp_path / "model.onnx"
    status, out, err = run(capsys, "export", setup["pretrained"], "--format", "onnx", "--output", output)
    assert status == 0, err
    assert "inputs: wavs [batch, samples]" in out
    assert describe_preprocessing(load_model(setup["pretrained"]).modules) in out  # the model's own
    graph = WaveformGraphModel(str(output))
    for path in trial_files(setup["trials"])[:3]:
        embedding = graph(load_audio(path)[None])[0]
        assert torch.allclose(embedding, setup["embeddings"][path], atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "{pretrained}", "{audio}/none.wav", "{audio}/spk1/a.wav"], "none.wav: missing"),
        (["embed", "{root}/no_model", "{audio}", "--output", "{root}/e.npy"], "no_model: no such local folder"),
        (["embed", "{pretrained}", "{audio}", "--output", "{root}/e.csv"], "give a .npy or .pt"),
        (["score", "{pretrained}", "{root}/none.txt"], "trial list"),
        (["verify", "{root}/experiment", "{audio}/spk1/a.wav", "{audio}/spk1/b.wav"],
         "stores no threshold 'eer'"),
    ],
)
def test_bad_input_one_error_line(setup, capsys, argv, message):
    argv = [arg.format(**setup) for arg in argv]
    status, out, err = run(capsys, *argv)
    assert status == 1 and out == ""
    assert err.startswith("fefa-speechbrain: error: ") and message in err
    assert "Traceback" not in err


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "fefa_speechbrain", "--help"],
                            capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0 and "embed,score,verify,diarize,enroll,identify,export" in result.stdout


def test_export_script_stores_and_prints_thresholds(setup, capsys, monkeypatch):
    import runpy

    from test_robustness import RECIPE

    out = setup["root"] / "pretrained_by_script"
    monkeypatch.setattr(sys, "argv", [
        "export_pretrained.py", str(setup["root"] / "experiment"), str(out),
        f"--threshold_trials={setup['trials_file']}", f"--audio_root={setup['audio']}",
    ])
    runpy.run_path(f"{RECIPE}/export_pretrained.py", run_name="__main__")
    printed = capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    eer = config["thresholds"]["eer"]
    assert f"Stored threshold eer: {eer['value']:.4f} ({eer['description']})" in printed
    assert f"fefa-speechbrain verify {out}" in printed
    reference = json.loads(open(os.path.join(setup["pretrained"], "config.json")).read())
    assert eer["value"] == pytest.approx(reference["thresholds"]["eer"]["value"], abs=1e-6)


def test_score_unlabelled_list_gives_scores_only(setup, capsys, tmp_path):
    labelled = open(setup["trials_file"], encoding="utf-8").read().splitlines()
    unlabelled = tmp_path / "pairs.txt"
    unlabelled.write_text("".join(" ".join(line.split()[1:]) + "\n" for line in labelled))
    output = tmp_path / "scores.txt"
    status, out, err = run(capsys, "score", setup["pretrained"], unlabelled,
                           "--audio-root", setup["audio"], "--output", output, "--no-speech-check")
    assert status == 0, err
    lines = [line.split() for line in output.read_text().splitlines()]
    assert all(len(fields) == 3 for fields in lines)
    np.testing.assert_allclose([float(f[2]) for f in lines], setup["scores"], atol=1e-5)
    assert "no labels" in out and "EER " not in out.replace("no EER", "")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(labelled[0] + "\n" + " ".join(labelled[1].split()[1:]) + "\n")
    status, out, err = run(capsys, "score", setup["pretrained"], mixed,
                           "--audio-root", setup["audio"])
    assert status != 0 and "label every line or none" in err
