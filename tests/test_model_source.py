"""MODEL = a training run, a pretrained folder or a hub id: one loader, every script.

A tiny untrained quarter-width thin-ResNet34 experiment (test_robustness's) is exported
with export_pretrained; each recipe script must give the same numbers on the export
as on the training run.
"""

import json
import runpy
import sys

import numpy as np
import pytest
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from fefa_speechbrain.inference.embedder import SpeakerEmbedder, pad_signals
from fefa_speechbrain.inference.model_source import load_model, model_kind
from fefa_speechbrain.export import export_pretrained
from test_robustness import RECIPE, make_experiment, write_corpus


def export_of(experiment, out_dir, **kwargs):
    labels = CategoricalEncoder()
    labels.update_from_iterable(["spk1", "spk2", "spk3"])
    labels.save(f"{experiment}/save/label_encoder.txt")
    return export_pretrained(experiment, out_dir, **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_source")
    trials = write_corpus(str(root / "audio"))
    experiment = make_experiment(root / "experiment", "single", 3)
    exported = export_of(experiment, root / "pretrained")
    return {"root": root, "trials": trials, "experiment": experiment, "pretrained": str(exported)}


def run_script(name, *args, monkeypatch):
    """A recipe script in this process, as ``python <name>.py <args>`` would run it."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, args)])
    runpy.run_path(f"{RECIPE}/{name}.py", run_name="__main__")


def test_kinds_and_same_embeddings(models):
    assert model_kind(models["experiment"]) == "experiment"
    assert model_kind(models["pretrained"]) == "pretrained"
    generator = torch.Generator().manual_seed(1)
    wavs, lengths = pad_signals([0.1 * torch.randn(n, generator=generator) for n in (16000, 9000)])
    embedded = {}
    for kind in ("experiment", "pretrained"):
        loaded = load_model(models[kind])
        assert loaded.kind == kind and loaded.sample_rate == 16000
        embedded[kind] = SpeakerEmbedder(loaded.modules).embed(wavs, lengths)
    assert embedded["experiment"].shape == (2, 32)
    assert torch.allclose(embedded["experiment"], embedded["pretrained"], atol=1e-6)


def test_bad_model_one_clear_error(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a training run .* nor a pretrained"):
        load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is a file, not a model folder"):
        load_model(models["trials"])


def test_speaker_verification_on_pretrained_folder(models, monkeypatch):
    results = {}
    for kind in ("experiment", "pretrained"):
        out = models["root"] / f"verification_{kind}"
        run_script(
            "speaker_verification", f"{RECIPE}/hparams/verification.yaml",
            f"--data_folder={models['root']}", f"--verification_file={models['trials']}",
            "--audio_root=null", f"--experiment_folder={models[kind]}",
            f"--output_folder={out}", "--batch_size=4", monkeypatch=monkeypatch,
        )
        results[kind] = json.loads((out / "results.json").read_text())
        results[kind]["scores"] = (out / "scores.txt").read_text().split()
    assert results["pretrained"]["checkpoint"] == models["pretrained"]
    assert results["pretrained"]["n_target"] == 3 and results["pretrained"]["n_nontarget"] == 12
    for key in ("eer", "min_dcf_0.01", "eer_threshold"):
        assert results["pretrained"][key] == pytest.approx(results["experiment"][key], abs=1e-5)
    scores = {kind: np.array(results[kind]["scores"][3::4], float) for kind in results}
    np.testing.assert_allclose(scores["pretrained"], scores["experiment"], atol=1e-5)


def test_noise_robustness_on_pretrained_folder(models, monkeypatch):
    out = models["root"] / "noise"
    experiments = f"run:{models['experiment']},export:{models['pretrained']}"
    run_script(
        "noise_robustness", f"{RECIPE}/hparams/noise_robustness.yaml",
        f"--data_folder={models['root']}", f"--verification_file={models['trials']}",
        "--audio_root=null", f"--experiments={experiments}", "--snr_levels=[clean,10]",
        "--kinds=[gaussian]", f"--output_folder={out}", "--batch_size=4",
        monkeypatch=monkeypatch,
    )
    rows = json.loads((out / "noise_robustness.json").read_text())["rows"]
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    assert len(by_model["export"]) == 2
    for run_row, export_row in zip(by_model["run"], by_model["export"]):
        assert export_row["eer"] == pytest.approx(run_row["eer"], abs=1e-6)
        assert export_row["min_dcf_0.01"] == pytest.approx(run_row["min_dcf_0.01"], abs=1e-6)


def test_plot_attention_on_pretrained_folder(models, monkeypatch):
    means = {}
    for kind in ("experiment", "pretrained"):
        out = models["root"] / f"attention_{kind}"
        run_script(
            "plot_attention", f"{RECIPE}/hparams/plot_attention.yaml",
            f"--data_folder={models['root']}", f"--verification_file={models['trials']}",
            "--audio_root=null", f"--experiment_folder={models[kind]}", "--n_overlays=1",
            f"--output_folder={out}", "--batch_size=4", monkeypatch=monkeypatch,
        )
        means[kind] = np.load(out / "attention_mean.npy")
    assert means["pretrained"].shape == (257,)
    assert not np.allclose(means["pretrained"], 1.0)  # random FEFA: not uniform
    np.testing.assert_allclose(means["pretrained"], means["experiment"], atol=1e-6)


def test_hub_id_through_speechbrain_fetching(models, monkeypatch, tmp_path):
    """A hub id goes through SpeechBrain's fetching (the hub download served from the export)."""
    import shutil

    fetched = []

    def from_export(hf_kwargs, destination, local_strategy):
        assert hf_kwargs["repo_id"] == "someone/fefa-tiny"
        fetched.append(hf_kwargs["filename"])
        shutil.copyfile(f"{models['pretrained']}/{hf_kwargs['filename']}", destination)

    monkeypatch.setattr("speechbrain.utils.fetching.download_file_hf", from_export)
    # the simulated hub answers (load_model first checks that the hub can be reached)
    monkeypatch.setattr("fefa_speechbrain.inference.model_source._hub_unreachable", lambda: None)
    assert model_kind("someone/fefa-tiny") == "hub"
    loaded = load_model("someone/fefa-tiny", savedir=str(tmp_path / "hub"))
    assert loaded.kind == "hub" and loaded.config["embedding_dim"] == 32
    assert {"hyperparams.yaml", "embedding_model.ckpt", "config.json"} <= set(fetched)
    wavs = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(2))
    local = SpeakerEmbedder(load_model(models["pretrained"]).modules).embed(wavs)
    assert torch.allclose(SpeakerEmbedder(loaded.modules).embed(wavs), local, atol=1e-6)
