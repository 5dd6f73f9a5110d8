"""The command line under bad input (issue 22): nothing lost, nothing silent.

Each test would fail with the old behaviour: an output that replaced an input, an
embeddings index that did not fit its matrix, files of a folder left out without a word,
names that shifted the index, a truncated WAV without a warning, meaningless thresholds
accepted, a graph written under the other format's extension, an edited or hostile yaml
loaded silently, bare tracebacks for short clips, lists, hub ids and broken files, and a
training or export that a full disk left unrecoverable.
"""

import errno
import json
import os
import shutil
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from fefa_speechbrain import atomic
from fefa_speechbrain.cli import _check_lengths, main
from fefa_speechbrain.data.audio import AudioError
from fefa_speechbrain.inference import embedding_files, model_source
from fefa_speechbrain.inference.embedding_files import (
    EmbeddingsFileError,
    read_embeddings,
    write_embeddings,
)
from fefa_speechbrain.inference.embedder import SpeakerEmbedder
from fefa_speechbrain.inference.model_source import load_model
from fefa_speechbrain.experiment import ExperimentError, rerun_differences, save_hyperparams
from fefa_speechbrain.hparams import UntrustedYamlError
from test_model_source import export_of
from test_robustness import RECIPE, TRAIN_YAML, make_experiment, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_inputs")
    trials_file = write_corpus(str(root / "audio"))
    experiment = make_experiment(root / "experiment", "single", 4)
    folder = export_of(experiment, root / "pretrained", threshold_trials=trials_file)
    return {"root": root, "audio": str(root / "audio"), "trials_file": trials_file,
            "experiment": experiment, "pretrained": str(folder)}


def run(capsys, *argv):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_error(capsys, *argv):
    """The error of a command that must fail: one line (warnings may come before it)."""
    status, out, err = run(capsys, *argv)
    assert status == 1 and "embeddings of" not in out, err  # (SpeechBrain logs on stdout)
    assert "Traceback" not in err
    error = err[err.index("fefa-speechbrain: error: "):]
    assert not error.rstrip("\n").split("\n")[-1].startswith("fefa-speechbrain: warning")
    return error


def copy_model(setup, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(setup["pretrained"], folder)
    return folder


def tone(path, samples=8000, rate=16000):
    t = np.arange(samples) / rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.cos(t * 3000), rate)


# 1. No output ever replaces an input

def test_outputs_that_are_inputs_are_refused(setup, capsys, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{setup['audio']}/spk1/a.wav\n")
    err = one_error(capsys, "embed", setup["pretrained"], listing, "--output", tmp_path / "list.npy")
    assert f"{listing} is an input of this command" in err
    assert listing.read_text() == f"{setup['audio']}/spk1/a.wav\n"
    trials = open(setup["trials_file"]).read()
    err = one_error(capsys, "score", setup["pretrained"], setup["trials_file"], "--output",
                    os.path.join(setup["audio"], ".", os.path.basename(setup["trials_file"])))
    assert "is an input of this command" in err and open(setup["trials_file"]).read() == trials
    link = tmp_path / "scores.txt"
    link.symlink_to(setup["trials_file"])  # another name for the trial list
    assert "is an input" in one_error(capsys, "score", setup["pretrained"], setup["trials_file"],
                                      "--output", link)
    audio = os.path.join(setup["audio"], "spk1", "a.wav")
    os.link(audio, tmp_path / "hard.pt")  # an audio input under another name
    assert "is an input" in one_error(capsys, "embed", setup["pretrained"], audio,
                                      "--output", tmp_path / "hard.pt")
    model = copy_model(setup, tmp_path)
    os.link(model / "embedding_model.ckpt", model / "graph.pt")
    assert "is an input" in one_error(capsys, "export", model, "--format", "torchscript",
                                      "--output", model / "graph.pt")


# 2. The matrix and its index are checked against each other

def test_an_index_that_does_not_fit_its_matrix_is_refused_on_read(tmp_path, monkeypatch):
    path = tmp_path / "emb.npy"
    write_embeddings(path, ["a.wav", "b.wav"], np.eye(2, dtype=np.float32))
    new_names = [f"n{i}.wav" for i in range(5)]

    def killed(*args, **kwargs):  # the process dies between the two writes
        raise KeyboardInterrupt

    monkeypatch.setattr(embedding_files, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        write_embeddings(path, new_names, np.ones((5, 2), dtype=np.float32))
    assert np.load(path).shape == (5, 2)  # new rows beside the old two names
    with pytest.raises(EmbeddingsFileError, match="declares 2 rows but names 2|do not belong together"):
        read_embeddings(path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embedding_files, "atomic_write_text", atomic.atomic_write_text)
    write_embeddings(path, ["a.wav", "b.wav"], np.eye(2, dtype=np.float32))
    monkeypatch.setattr(embedding_files, "atomic_write_text", full)
    with pytest.raises(OSError):
        write_embeddings(path, ["c.wav", "d.wav"], np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(EmbeddingsFileError, match="SHA-256 differs"):
        read_embeddings(path)  # same row count, other rows: only the hash tells
    (tmp_path / "emb.txt").write_text("a.wav\nb.wav\n")  # an index without its header
    with pytest.raises(EmbeddingsFileError, match="no 'fefa-speechbrain embeddings' header"):
        read_embeddings(path)


# 3. and 4. Folders: every file left out is named; names that would shift the index

def test_other_audio_formats_are_read_or_named(setup, capsys, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tone(folder / "a.wav")
    data = 0.3 * np.sin(np.arange(24000) / 10)
    sf.write(str(folder / "b.opus"), data, 48000, format="OGG", subtype="OPUS")  # Ogg Opus
    (folder / "c.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    (folder / "d.wma").write_bytes(bytes(range(256)))
    (folder / "notes.md").write_text("not audio\n")
    status, out, err = run(capsys, "embed", setup["pretrained"], folder, "--output", tmp_path / "e.npy")
    assert status == 0, err
    names, matrix = read_embeddings(tmp_path / "e.npy")
    assert sorted(os.path.basename(name) for name in names) == ["a.wav", "b.opus"]
    assert "3 files of the input folders are left out" in err
    for name, why in (("c.m4a", "convert it"), ("d.wma", "soundfile cannot read"),
                      ("notes.md", "not audio (extension .md)")):
        assert f"{folder / name}: " in err and why in err
    assert "2 embeddings" in out and "3 files of the folders left out" in out


@pytest.mark.parametrize("name", ["x\ny.wav", "x\ry.wav", "x\u2028y.wav", "x\ty.wav"])
def test_names_that_would_shift_the_index_are_refused(setup, capsys, tmp_path, name):
    folder = tmp_path / "names"
    folder.mkdir()
    tone(folder / "ok.wav")
    tone(folder / name)
    err = one_error(capsys, "embed", setup["pretrained"], folder, "--output", tmp_path / "e.npy")
    assert repr(str(folder / name)) in err and "control character" in err and "FILE.pt" in err
    assert not (tmp_path / "e.txt").exists()
    status, _, err = run(capsys, "embed", setup["pretrained"], folder, "--output", tmp_path / "e.pt")
    assert status == 0, err
    assert sorted(read_embeddings(tmp_path / "e.pt")[0]) == sorted([str(folder / name), str(folder / "ok.wav")])


# 5. A truncated WAV is named

def test_a_truncated_wav_gives_a_warning(setup, capsys, tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(str(path), 0.3 * np.sin(np.arange(16000) / 7), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 8000])
    status, out, err = run(capsys, "embed", setup["pretrained"], path, "--output", tmp_path / "e.npy")
    assert status == 0, err
    assert f"fefa-speechbrain: warning: {path}: truncated: the header declares 16000 samples, " \
           "the file holds 12000" in err
    assert err.count("truncated:") == 1 and "truncated:" not in out


# 6. and 13. Values argparse refuses

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1.5", "-1.01", "abc"])
def test_meaningless_thresholds_are_refused(setup, capsys, value):
    audio = setup["audio"]
    with pytest.raises(SystemExit) as stop:
        main(["verify", setup["pretrained"], f"{audio}/spk1/a.wav", f"{audio}/spk1/b.wav",
              f"--threshold={value}"])
    assert stop.value.code == 2
    assert f"argument --threshold: '{value}' is not a cosine threshold: give a number in [-1, 1]" \
           in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--batch-size", "--threads"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_non_positive_counts_are_refused(setup, capsys, tmp_path, option, value):
    with pytest.raises(SystemExit) as stop:
        main(["embed", setup["pretrained"], setup["audio"], "--output", str(tmp_path / "e.npy"),
              f"{option}={value}"])
    assert stop.value.code == 2
    assert f"argument {option}: must be an integer >= 1, got '{value}'" in capsys.readouterr().err


# 7. The graph's file name fits its format

@pytest.mark.parametrize("fmt, output, hint", [("onnx", "model.pt", "--format torchscript"),
                                               ("torchscript", "model.onnx", "--format onnx"),
                                               ("onnx", "model.bin", "")])
def test_export_extension_must_fit_the_format(setup, capsys, tmp_path, fmt, output, hint):
    err = one_error(capsys, "export", setup["pretrained"], "--format", fmt, "--output", tmp_path / output)
    assert f"a {fmt} graph is written to a" in err and hint in err
    assert not (tmp_path / output).exists()


# 8. An edited yaml that disagrees with config.json

@pytest.mark.parametrize("old, new, key", [
    ("sample_rate: 16000", "sample_rate: 8000", "sample_rate: 8000 in"),
    ("fefa_rescale: true", "fefa_rescale: false", "embedding_model.fefa_rescale: False in"),
    ("fefa: single", "fefa: none", "embedding_model.fefa: 'none' in"),
])
def test_yaml_that_disagrees_with_config_is_refused(setup, capsys, tmp_path, old, new, key):
    model = copy_model(setup, tmp_path)
    yaml_file = model / "hyperparams.yaml"
    text = yaml_file.read_text()
    assert old in text
    yaml_file.write_text(text.replace(old, new))
    err = one_error(capsys, "embed", model, setup["audio"], "--output", tmp_path / "e.npy")
    assert f"{yaml_file} disagrees with {model / 'config.json'}" in err and key in err
    assert f"in {model / 'config.json'}" in err


def test_other_edits_of_the_yaml_are_named(setup, caplog, tmp_path):
    model = copy_model(setup, tmp_path)
    with open(model / "hyperparams.yaml", "a") as handle:
        handle.write("\n# my note\n")
    load_model(str(model))
    assert "was edited after export" in caplog.text


# 9. Tags naming code outside the trusted packages

@pytest.mark.parametrize("line", [
    "evil: !apply:os.system ['touch {marker}']",
    "evil: !!python/object/apply:os.system ['touch {marker}']",
    "evil: !<!apply:os.system> ['touch {marker}']",
    "evil: !apply:speechbrain.utils.superpowers.run_shell ['touch {marker}']",
    "evil: !name:torch.hub.load",
    "evil: !new:builtins.exec ['open(\"{marker}\", \"w\")']",
    "evil: !apply:torch.nn.Module.__init__.__globals__",
    "evil: !include:other.yaml",
])
def test_untrusted_tags_are_refused_before_loading(setup, capsys, tmp_path, line):
    model = copy_model(setup, tmp_path)
    marker = tmp_path / "ran"
    with open(model / "hyperparams.yaml", "a") as handle:
        handle.write("\n" + line.format(marker=marker) + "\n")
    err = one_error(capsys, "embed", model, setup["audio"], "--output", tmp_path / "e.npy")
    assert "refusing to load it" in err and "--trust" in err and "line " in err
    with pytest.raises(UntrustedYamlError):
        load_model(str(model))
    assert not marker.exists()


def test_trust_loads_the_yaml_as_it_is(setup, capsys, tmp_path):
    model = copy_model(setup, tmp_path)
    marker = tmp_path / "ran"
    with open(model / "hyperparams.yaml", "a") as handle:
        handle.write(f"\nevil: !apply:os.system ['touch {marker}']\n")
    status, _, err = run(capsys, "embed", model, setup["audio"], "--output", tmp_path / "e.npy", "--trust")
    assert status == 0, err
    assert marker.exists()  # --trust means: the user takes the author's code


# 10. A clip shorter than the model's minimum, on every backend

def ecapa_embedder():
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram
    from fefa_speechbrain.lobes.wrapper import FEFAWrapper

    torch.manual_seed(0)
    ecapa = ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8, lin_neurons=8)
    modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
               "embedding_model": FEFAWrapper(ecapa, 257).eval()}
    return modules, SpeakerEmbedder(modules)


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_a_clip_below_the_models_minimum_is_named(tmp_path, backend):
    modules, embedder = ecapa_embedder()
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
        from fefa_speechbrain.graph_export import export_graph, graph_embedder

        export_graph(modules["embedding_model"], str(tmp_path / "g.onnx"), "onnx", 257)
        embedder = graph_embedder(modules, str(tmp_path / "g.onnx"))
    short, fine = tmp_path / "short.wav", tmp_path / "fine.wav"
    tone(short, 480)
    tone(fine, 640)
    _check_lengths(embedder, [str(fine)], 16000)
    embedder.embed_files([str(fine)], 1)
    with pytest.raises(AudioError) as error:
        _check_lengths(embedder, [str(fine), str(short)], 16000)
    assert (f"{short}: too short: 480 samples at 16000 Hz < 640 (the model's shortest input, "
            "0.040 s)") in str(error.value)
    assert "nothing was embedded" in str(error.value)


# 11. List files: whitespace, BOM, CRLF; other encodings named

def test_lists_with_bom_crlf_and_spaces_are_read_and_latin1_named(setup, capsys, tmp_path):
    audio = setup["audio"]
    listing = tmp_path / "files.txt"
    listing.write_bytes(f"\ufeff  {audio}/spk1/a.wav \r\n\r\n\t{audio}/spk2/b.wav\r\n".encode("utf-8"))
    spaced = tmp_path / " lead.wav"  # a name that really begins with a space
    tone(spaced)
    (tmp_path / "more.txt").write_text(" lead.wav\n")
    status, out, err = run(capsys, "embed", setup["pretrained"], listing, tmp_path / "more.txt",
                           "--output", tmp_path / "e.npy")
    assert status == 0, err
    assert read_embeddings(tmp_path / "e.npy")[0] == [f"{audio}/spk1/a.wav", f"{audio}/spk2/b.wav",
                                                      str(spaced)]
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"{audio}/spk1/a.wav\n{audio}/caf\xe9.wav\n".encode("latin-1"))
    err = one_error(capsys, "embed", setup["pretrained"], latin, "--output", tmp_path / "f.npy")
    assert f"{latin}: line 2 is not UTF-8 (byte 0xe9" in err and "iconv" in err


# 12. An output that cannot be written is found before any work

def test_unwritable_outputs_fail_before_the_model_is_loaded(setup, capsys, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model_source, "load_model", never)
    (tmp_path / "a_file").write_text("")
    err = one_error(capsys, "embed", setup["pretrained"], setup["audio"], "--output",
                    tmp_path / "a_file" / "e.npy")
    assert f"output folder {tmp_path / 'a_file'} cannot be written" in err
    (tmp_path / "folder.npy").mkdir()
    assert "is a folder" in one_error(capsys, "embed", setup["pretrained"], setup["audio"],
                                      "--output", tmp_path / "folder.npy")
    err = one_error(capsys, "score", setup["pretrained"], setup["trials_file"], "--output",
                    tmp_path / "a_file" / "scores.txt")
    assert "cannot be written" in err


# 14. Paths outside the audio root: a remedy the command line offers

def test_outside_root_error_names_the_command_line_option(setup, capsys, tmp_path):
    audio = setup["audio"]
    trials = tmp_path / "abs.txt"
    trials.write_text(f"1 {audio}/spk1/a.wav {audio}/spk1/b.wav\n0 {audio}/spk1/a.wav {audio}/spk2/a.wav\n")
    err = one_error(capsys, "score", setup["pretrained"], trials, "--output", tmp_path / "s.txt")
    assert "is absolute" in err and "--allow-outside-root" in err and "allow_outside_root" not in err
    status, out, err = run(capsys, "score", setup["pretrained"], trials, "--allow-outside-root",
                           "--output", tmp_path / "s.txt")
    assert status == 0, err
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 2


# 15. Hub ids without network; mistyped local paths

def test_an_unreachable_hub_fails_in_seconds_naming_the_model(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refused(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(model_source.socket, "create_connection", refused)
    started = time.monotonic()
    with pytest.raises(model_source.PretrainedFolderError) as error:
        load_model("someone/some-model")
    assert time.monotonic() - started < 3
    assert "MODEL someone/some-model: no local folder of that name, and the hub cannot be " \
           "reached" in str(error.value) and "Network is unreachable" in str(error.value)

    def hangs(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(model_source.socket, "create_connection", hangs)
    monkeypatch.setattr(model_source, "HUB_TIMEOUT_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(model_source.PretrainedFolderError, match="no answer in 0.5 s"):
        load_model("someone/some-model")
    assert time.monotonic() - started < 3


def test_a_mistyped_local_path_is_not_looked_up_on_the_hub(setup, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("looked up on the hub")

    monkeypatch.setattr(model_source, "_check_hub_reachable", never)
    monkeypatch.chdir(setup["root"])
    for typo, hint in (("pretraind", "did you mean ./pretrained?"), ("./pretrainedd", "did you mean"),
                       ("audio/qqqq", "audio exists, so it is not taken for a hub id"),
                       ("audio/spk9", "did you mean audio/spk"),
                       ("~/no/such/model", "no such local folder"), ("a/b/c", "not a hub id")):
        with pytest.raises(FileNotFoundError, match="no such local folder") as error:
            load_model(typo)
        assert hint in str(error.value), str(error.value)


# 16. Malformed thresholds and checkpoints

@pytest.mark.parametrize("entry, problem", [
    ({"description": "d"}, "it has no 'value'"),
    ({"value": "0.5", "description": "d"}, "value '0.5' is not a number"),
    ({"value": float("nan"), "description": "d"}, "value nan is not a cosine in [-1, 1]"),
    ({"value": 3.0, "description": "d"}, "value 3.0 is not a cosine in [-1, 1]"),
    ("0.5", "a str, not {value, description}"),
])
def test_a_malformed_stored_threshold_names_config_json(setup, capsys, tmp_path, entry, problem):
    model = copy_model(setup, tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["thresholds"]["eer"] = entry
    (model / "config.json").write_text(json.dumps(config))
    audio = setup["audio"]
    err = one_error(capsys, "verify", model, f"{audio}/spk1/a.wav", f"{audio}/spk1/b.wav")
    assert f"{model / 'config.json'}: threshold 'eer' is malformed: {problem}" in err


@pytest.mark.parametrize("kind", ["pretrained", "experiment"])
def test_a_checkpoint_linked_to_a_text_file_is_named(setup, capsys, tmp_path, kind):
    text = tmp_path / "README"
    text.write_text("README\n")  # unpickling this text raises IndexError
    if kind == "pretrained":
        model = copy_model(setup, tmp_path)
        checkpoint = model / "embedding_model.ckpt"
    else:
        model = make_experiment(tmp_path / "run", "single", 5)
        checkpoint = next((tmp_path / "run" / "save").glob("CKPT+*")) / "embedding_model.ckpt"
        capsys.readouterr()
    checkpoint.unlink()
    checkpoint.symlink_to(text)
    err = one_error(capsys, "embed", model, setup["audio"], "--output", tmp_path / "e.npy")
    assert f"{checkpoint} (a link to {text}) cannot be read as a PyTorch state dict" in err


# 17. A full disk at a training's start, and during an export

def test_saved_hyperparams_are_written_atomically_and_a_damaged_copy_handled(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    values = {"seed": 3, "skip_prep": True, "data_folder": str(tmp_path),
              "verification_file": str(tmp_path / "unused.txt"), "output_folder": str(out)}
    saved = save_hyperparams(TRAIN_YAML, str(out), values)
    before = open(saved).read()
    real = atomic.os.replace

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_hyperparams(TRAIN_YAML, str(out), {**values, "seed": 4})
    monkeypatch.setattr(atomic.os, "replace", real)
    assert open(saved).read() == before and sorted(os.listdir(out)) == ["hyperparams.yaml"]
    # a copy truncated by an older version: nothing trained yet -> written again
    open(saved, "w").write(before[: len(before) // 3] + "\n  bad: [unclosed\n")
    assert rerun_differences(str(out), TRAIN_YAML, values) == []
    assert "is damaged" in caplog.text and not os.path.exists(saved)
    # with checkpoints: the experiment is unknown, so a clear error
    assert rerun_differences(str(out), TRAIN_YAML, values) == []  # a fresh folder
    save_hyperparams(TRAIN_YAML, str(out), values)
    assert rerun_differences(str(out), TRAIN_YAML, values) == []  # the same experiment
    open(saved, "w").write("seed: 3\nfefa: [single\n")
    (out / "save" / "CKPT+2026-01-01+00-00-00+00").mkdir(parents=True)
    with pytest.raises(ExperimentError, match="hyperparams.yaml is damaged .* delete the file"):
        rerun_differences(str(out), TRAIN_YAML, values)


def test_the_training_script_saves_hyperparams_atomically():
    source = open(os.path.join(RECIPE, "train_speaker_embeddings.py")).read()
    assert "save_hyperparams" in source and "hyperparams_to_save=None" in source


def test_export_on_a_full_disk_fails_with_one_clear_line(setup, monkeypatch, tmp_path):
    import runpy

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "export"
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(sys, "argv", ["export_pretrained.py", setup["experiment"], str(out)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(f"{RECIPE}/export_pretrained.py", run_name="__main__")
    message = str(stop.value.code)
    assert message.startswith(f"export_pretrained.py: error: writing the export to {out} failed: "
                              "the disk is full")
    assert "\n" not in message and not out.exists() and os.listdir(tmp_path) == []
