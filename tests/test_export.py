"""Export of a trained experiment to a SpeechBrain pretrained folder, loaded offline."""

import json
import os
import re
import runpy
import shutil
import socket
from pathlib import Path

import pytest
import soundfile as sf
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.inference.speaker import SpeakerRecognition

import fefa_speechbrain.export as export
from fefa_speechbrain.lobes.classifier import SpeakerClassifier
from fefa_speechbrain.export import (
    PretrainedFolderError,
    check_pretrained_folder,
    export_pretrained,
    make_inference_yaml,
)
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, load_experiment, pad_signals
from fefa_speechbrain.hparams import load_hparams

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb" / "FEFA"
HPARAMS = RECIPE / "hparams"
SPEAKERS = ["id10001", "id10002", "id10003"]
EXPORTED_FILES = {
    "hyperparams.yaml",
    "embedding_model.ckpt",
    "classifier.ckpt",
    "label_encoder.ckpt",
    "config.json",
    "README.md",
}
TRAINING_ONLY_KEYS = {
    "data_folder", "verification_file", "output_folder", "save_folder", "train_annotation",
    "checkpointer", "train_logger", "opt_class", "lr_annealing", "epoch_counter",
    "compute_cost", "augmenter", "train_dataloader_options", "__set_seed",
}
RUN = {"device": "cpu"}


def make_experiment(folder, yaml_name, error_rates=(0.5,), **overrides):
    """A training output folder as the recipe leaves it, one checkpoint per error rate.

    Each checkpoint gets different weights. Returns the embedding_model state dict saved
    with each error rate.
    """
    overrides = {
        "n_speakers": len(SPEAKERS),
        "data_folder": str(folder / "data"),
        "verification_file": str(folder / "veri_test2.txt"),
        "output_folder": str(folder),
        "skip_prep": True,
        **overrides,
    }
    text = yaml.safe_dump(overrides)
    hparams = load_hparams(HPARAMS / yaml_name, text)
    sb.create_experiment_directory(
        str(folder), hyperparams_to_save=str(HPARAMS / yaml_name), overrides=text
    )
    states = {}
    for rate in error_rates:
        with torch.no_grad():
            for key in ("embedding_model", "classifier"):
                for param in hparams["modules"][key].parameters():
                    param.add_(0.01 * torch.randn_like(param))
        hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": rate})
        state = hparams["modules"]["embedding_model"].state_dict()
        states[rate] = {key: value.clone() for key, value in state.items()}
    labels = CategoricalEncoder()
    labels.update_from_iterable(SPEAKERS)
    labels.save(folder / "save" / "label_encoder.txt")
    return states


def recipe_embeddings(experiment, wavs, lengths):
    """What the recipe itself computes: SpeakerEmbedder on load_experiment's modules."""
    hparams, _ = load_experiment(experiment)
    return SpeakerEmbedder(hparams["modules"]).embed(wavs, lengths)


def two_waveforms():
    """A padded batch of two noise waveforms of 1.3 s and 0.8 s."""
    generator = torch.Generator().manual_seed(7)
    return pad_signals([0.1 * torch.randn(n, generator=generator) for n in (20800, 12800)])


@pytest.fixture(scope="module")
def ecapa_experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ecapa") / "experiment"
    states = make_experiment(
        folder, "train_ecapa_fefa.yaml", error_rates=(0.5, 0.2, 0.7), ecapa_channels=16, emb_dim=32
    )
    return folder, states


@pytest.fixture(scope="module")
def ecapa_export(ecapa_experiment):
    experiment, _ = ecapa_experiment
    return export_pretrained(experiment, experiment.parent / "pretrained")


@pytest.fixture(scope="module")
def resnet_experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet") / "experiment"
    make_experiment(folder, "train_thin_resnet34_gvlad.yaml", width=0.25)
    return folder


@pytest.fixture(scope="module")
def resnet_export(resnet_experiment):
    return export_pretrained(resnet_experiment, resnet_experiment.parent / "pretrained")


@pytest.fixture
def offline(monkeypatch):
    """Any network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading a local pretrained folder")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("speechbrain.utils.fetching.download_file", refuse)
    monkeypatch.setattr("speechbrain.utils.fetching.download_file_hf", refuse)


def copy_folder(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def test_export_writes_hub_layout(ecapa_experiment, ecapa_export):
    experiment, states = ecapa_experiment
    assert {p.name for p in ecapa_export.iterdir()} == EXPORTED_FILES
    config = json.loads((ecapa_export / "config.json").read_text())
    assert config["speechbrain_interface"] == "SpeakerRecognition"
    assert (config["embedding_dim"], config["n_speakers"], config["fefa"]) == (32, 3, "single")
    assert config["checkpoint_meta"]["ErrorRate"] == 0.2
    assert config["source_experiment"] == experiment.name  # no local path in the folder

    tree = YAML(typ="rt").load((ecapa_export / "hyperparams.yaml").read_text())
    assert set(tree) == {
        "sample_rate", "compute_features", "mean_var_norm", "ecapa", "embedding_model",
        "classifier", "audio_normalizer", "modules", "label_encoder", "pretrainer",
    }
    assert set(tree["pretrainer"]["loadables"]) == {
        "embedding_model", "classifier", "label_encoder"
    }

    # the best checkpoint (ErrorRate 0.2), not the latest nor the first
    saved = torch.load(ecapa_export / "embedding_model.ckpt", weights_only=True)
    assert saved.keys() == states[0.2].keys()
    assert all(torch.equal(saved[k], states[0.2][k]) for k in saved)
    assert not all(torch.equal(saved[k], states[0.7][k]) for k in saved)
    labels = (experiment / "save" / "label_encoder.txt").read_bytes()
    assert (ecapa_export / "label_encoder.ckpt").read_bytes() == labels
    assert "SpeakerRecognition.from_hparams" in (ecapa_export / "README.md").read_text()


@pytest.mark.parametrize("model", ["ecapa", "resnet"])
def test_embeddings_equal_recipe_embeddings(model, request, offline):
    experiment = request.getfixturevalue(f"{model}_experiment")
    experiment = experiment[0] if isinstance(experiment, tuple) else experiment
    folder = request.getfixturevalue(f"{model}_export")
    wavs, lengths = two_waveforms()
    expected = recipe_embeddings(experiment, wavs, lengths)

    pretrained = SpeakerRecognition.from_hparams(source=str(folder), savedir=None, run_opts=RUN)
    embeddings = pretrained.encode_batch(wavs, lengths)
    assert embeddings.shape == (2, 1, expected.shape[-1])
    torch.testing.assert_close(embeddings.squeeze(1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("savedir", ["none", "folder", "elsewhere"])
def test_loads_offline_whatever_savedir(ecapa_export, savedir, tmp_path, offline):
    savedirs = {"none": None, "folder": str(ecapa_export), "elsewhere": str(tmp_path / "cache")}
    wavs, lengths = two_waveforms()
    reference = SpeakerRecognition.from_hparams(
        source=str(ecapa_export), savedir=None, run_opts=RUN
    )
    model = EncoderClassifier.from_hparams(
        source=str(ecapa_export), savedir=savedirs[savedir], run_opts=RUN
    )
    torch.testing.assert_close(
        model.encode_batch(wavs, lengths), reference.encode_batch(wavs, lengths), atol=0, rtol=0
    )
    assert {p.name for p in ecapa_export.iterdir()} == EXPORTED_FILES


def test_verify_and_classify(ecapa_export, tmp_path, offline):
    model = SpeakerRecognition.from_hparams(source=str(ecapa_export), savedir=None, run_opts=RUN)
    wavs, lengths = two_waveforms()
    enrol, test = wavs[:1], wavs[1:, :12800]
    cosine = torch.nn.functional.cosine_similarity(
        model.encode_batch(enrol).flatten(), model.encode_batch(test).flatten(), dim=0
    )

    score, decision = model.verify_batch(enrol, test)
    assert float(score) == pytest.approx(float(cosine), abs=1e-6)
    assert bool(decision) == bool(cosine > 0.25)
    same, same_decision = model.verify_batch(enrol, enrol)
    assert float(same) == pytest.approx(1.0, abs=1e-5) and bool(same_decision)

    sf.write(tmp_path / "enrol.wav", enrol[0].numpy(), 16000, subtype="FLOAT")
    sf.write(tmp_path / "test.wav", test[0].numpy(), 16000, subtype="FLOAT")
    file_score, _ = model.verify_files(str(tmp_path / "enrol.wav"), str(tmp_path / "test.wav"))
    assert float(file_score) == pytest.approx(float(cosine), abs=1e-5)

    embeddings = model.encode_batch(wavs, lengths).squeeze(1)
    out_prob, best, index, labels = model.classify_batch(wavs, lengths)
    logits = model.mods.classifier(embeddings.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(out_prob, logits)
    assert index.tolist() == logits.argmax(-1).tolist()
    assert labels == [SPEAKERS[i] for i in index.tolist()]


def test_missing_files_are_named(ecapa_export, tmp_path, offline):
    folder = copy_folder(ecapa_export, tmp_path)
    (folder / "embedding_model.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match=r"embedding_model\.ckpt missing"):
        check_pretrained_folder(folder)
    with pytest.raises(FileNotFoundError, match=r"embedding_model\.ckpt is missing"):
        SpeakerRecognition.from_hparams(source=str(folder), savedir=None, run_opts=RUN)

    shutil.copy(ecapa_export / "embedding_model.ckpt", folder)
    (folder / "label_encoder.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match=r"label_encoder\.ckpt is missing"):
        EncoderClassifier.from_hparams(source=str(folder), savedir=None, run_opts=RUN)

    (folder / "hyperparams.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"hyperparams\.yaml, label_encoder\.ckpt missing"):
        check_pretrained_folder(folder)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        check_pretrained_folder(tmp_path / "nowhere")


def test_mismatched_checkpoints_are_named(ecapa_export, resnet_export, tmp_path, offline):
    folder = copy_folder(ecapa_export, tmp_path)
    torch.save(SpeakerClassifier(32, 5).state_dict(), folder / "classifier.ckpt")
    expected = (
        r"classifier\.ckpt does not fit the SpeakerClassifier.*"
        r"weight is \[5, 32\] in the file, \[3, 32\] in the model"
    )
    with pytest.raises(PretrainedFolderError, match=expected):
        check_pretrained_folder(folder)
    with pytest.raises(PretrainedFolderError, match=expected):
        SpeakerRecognition.from_hparams(source=str(folder), savedir=None, run_opts=RUN)

    shutil.copy(ecapa_export / "classifier.ckpt", folder)
    shutil.copy(resnet_export / "embedding_model.ckpt", folder)
    expected = r"embedding_model\.ckpt does not fit the FEFAWrapper.*missing from the file"
    with pytest.raises(PretrainedFolderError, match=expected):
        check_pretrained_folder(folder)

    shutil.copy(ecapa_export / "embedding_model.ckpt", folder)
    (folder / "classifier.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedFolderError, match=r"classifier\.ckpt cannot be read"):
        check_pretrained_folder(folder)

    shutil.copy(ecapa_export / "classifier.ckpt", folder)
    labels = CategoricalEncoder()
    labels.update_from_iterable(SPEAKERS + ["id10004"])
    labels.save(folder / "label_encoder.ckpt")
    expected = r"label_encoder\.ckpt holds 4 speakers but .*classifier\.ckpt scores 3"
    with pytest.raises(PretrainedFolderError, match=expected):
        check_pretrained_folder(folder)


@pytest.fixture(scope="module")
def small_experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small") / "experiment"
    make_experiment(folder, "train_ecapa_fefa.yaml", ecapa_channels=8, emb_dim=16)
    return folder


def test_export_refuses_broken_experiments(small_experiment, tmp_path):
    out = tmp_path / "pretrained"
    (checkpoint,) = (small_experiment / "save").glob("CKPT+*")
    classifier = checkpoint / "classifier.ckpt"
    labels = small_experiment / "save" / "label_encoder.txt"
    saved = {path: path.read_bytes() for path in (classifier, labels)}
    try:
        torch.save(SpeakerClassifier(16, 5).state_dict(), classifier)
        expected = re.escape(f"{classifier} does not fit") + r".*\[5, 16\] in the file"
        with pytest.raises(PretrainedFolderError, match=expected):
            export_pretrained(small_experiment, out)
        classifier.write_bytes(saved[classifier])
        labels.unlink()
        with pytest.raises(FileNotFoundError, match=r"save/label_encoder\.txt is missing"):
            export_pretrained(small_experiment, out)
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
    with pytest.raises(FileNotFoundError, match=r"hyperparams\.yaml is missing"):
        export_pretrained(tmp_path / "not_an_experiment", out)
    assert os.listdir(tmp_path) == []


def test_interrupted_export_leaves_no_out_dir(small_experiment, tmp_path, monkeypatch):
    out = tmp_path / "pretrained"

    def interrupt(*args, **kwargs):  # after the checkpoints are written, before the README
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(export, "_readme", interrupt)
        with pytest.raises(KeyboardInterrupt):
            export_pretrained(small_experiment, out)
    assert os.listdir(tmp_path) == []

    export_pretrained(small_experiment, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite"):
        export_pretrained(small_experiment, out)
    with monkeypatch.context() as patch:
        patch.setattr(export, "_readme", interrupt)
        with pytest.raises(KeyboardInterrupt):
            export_pretrained(small_experiment, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert os.listdir(tmp_path) == ["pretrained"]

    (out / "README.md").write_text("edited")
    export_pretrained(small_experiment, out, overwrite=True)
    assert (out / "README.md").read_text() == before["README.md"].decode()
    assert os.listdir(tmp_path) == ["pretrained"]

    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_pretrained(small_experiment, unrelated, overwrite=True)
    assert (unrelated / "todo.txt").read_text() == "keep me"


def test_cli_exports_and_prints_loading_code(ecapa_experiment, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli_export"
    monkeypatch.setattr("sys.argv", ["export_pretrained.py", str(ecapa_experiment[0]), str(out)])
    runpy.run_path(str(RECIPE / "export_pretrained.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert f'SpeakerRecognition.from_hparams(source="{out}", savedir=None)' in printed
    assert check_pretrained_folder(out)["label_encoder"].decode_ndim([0, 1, 2]) == SPEAKERS


@pytest.mark.parametrize("yaml_name", sorted(p.name for p in HPARAMS.glob("train_*.yaml")))
def test_inference_yaml_keeps_only_the_modules(yaml_name):
    tree = YAML(typ="rt").load(make_inference_yaml((HPARAMS / yaml_name).read_text()))
    assert {"compute_features", "mean_var_norm", "embedding_model", "classifier"} <= set(tree)
    assert not set(tree) & TRAINING_ONLY_KEYS
    assert "n_speakers" in tree and "emb_dim" in tree


def test_inference_yaml_from_unresolved_recipe_builds():
    text = make_inference_yaml((HPARAMS / "train_ecapa_fefa.yaml").read_text())
    assert set(YAML(typ="rt").load(text)) == {
        "fefa", "fefa_kernel", "fefa_apply", "fefa_rescale", "sample_rate", "n_speakers",
        "emb_dim", "ecapa_channels", "power_spectrum", "log_spectrum", "remove_dc", "head", "feature_norm",
        "compute_features", "mean_var_norm", "ecapa", "embedding_model", "classifier",
        "audio_normalizer", "modules", "label_encoder", "pretrainer",
    }
    hparams = load_hyperpyyaml(text, {"ecapa_channels": 8, "n_speakers": 4})
    assert hparams["embedding_model"].model is hparams["ecapa"]
    assert hparams["modules"]["classifier"].weight.shape == (4, 192)
    assert hparams["pretrainer"].loadables["label_encoder"] is hparams["label_encoder"]


def test_inference_yaml_refuses_unset_placeholders():
    text = (HPARAMS / "train_ecapa_fefa.yaml").read_text()
    text = text.replace("emb_dim: 192", "emb_dim: !PLACEHOLDER")
    expected = "train.yaml: emb_dim holds a !PLACEHOLDER that was never set"
    with pytest.raises(PretrainedFolderError, match=expected):
        make_inference_yaml(text, source="train.yaml")
