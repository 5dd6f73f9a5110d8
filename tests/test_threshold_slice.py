"""Threshold speakers of a folder corpus (prepare_folder_corpus(n_threshold_speakers=N)):
left out of training, their trials in threshold_trials.txt, the default of the export."""

import csv
import importlib.util
import itertools
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import yaml
from speechbrain.dataio.encoder import CategoricalEncoder

from fefa_speechbrain.data import prepare as prep
from fefa_speechbrain.data.prepare import prepare_folder_corpus, prepared_threshold_trials
from fefa_speechbrain.data.trials import read_trial_list
from fefa_speechbrain.experiment import hparams_differences
from fefa_speechbrain.export import export_pretrained
from fefa_speechbrain.hparams import load_hparams

SR = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb" / "FEFA"
SPEAKERS = [f"s{number:02d}" for number in range(12)]
CLIPS = 4
BASE_OUTPUTS = {"train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.txt",
                "prepare_report.json", "prepare_options.json"}


def make_corpus(root, speakers=SPEAKERS, clips=CLIPS, seconds=0.5):
    """``<root>/<speaker>/u<i>.flac`` of seeded noise; ``clips`` an int or {speaker: n}."""
    rng = np.random.default_rng(0)
    for speaker in speakers:
        count = clips[speaker] if isinstance(clips, dict) else clips
        os.makedirs(os.path.join(root, speaker), exist_ok=True)
        for number in range(count):
            noise = (0.1 * rng.standard_normal(int(seconds * SR))).astype("float32")
            sf.write(os.path.join(root, speaker, f"u{number}.flac"), noise, SR)
    return str(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("threshold") / "corpus")


def csv_speakers(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["spk_id"] for row in csv.DictReader(handle)}


def list_speakers(trials):
    return {path.split("/")[0] for trial in trials for path in (trial.enrol, trial.test)}


def contents(folder):
    return {name: (Path(folder) / name).read_bytes() for name in sorted(os.listdir(folder))}


def prepare(corpus, save, **options):
    return prepare_folder_corpus(corpus, str(save), n_test_speakers=3, verbose=False, **options)


def test_threshold_speakers_leave_training_and_fill_their_own_trials(corpus, tmp_path):
    save = tmp_path / "prep"
    summary = prepare(corpus, save, n_threshold_speakers=3)
    held = set(summary["threshold_speakers"])
    test = set(summary["test_speakers"])
    assert len(held) == 3 and len(test) == 3 and not held & test
    assert set(os.listdir(save)) == BASE_OUTPUTS | {"threshold_trials.txt"}

    training = csv_speakers(save / "train.csv") | csv_speakers(save / "dev.csv")
    assert training == set(SPEAKERS) - held - test
    assert summary["train"]["speakers"] == 6
    for name in ("enrol.csv", "test.csv"):
        assert not csv_speakers(save / name) & held
    test_trials = read_trial_list(str(save / "trials.txt"))
    assert list_speakers(test_trials) == test

    def exists(rel):
        return os.path.isfile(os.path.join(corpus, rel))

    trials = read_trial_list(str(save / "threshold_trials.txt"), resolve=exists)
    assert list_speakers(trials) == held
    targets = {(t.enrol, t.test) for t in trials if t.label == 1}
    every_pair = {
        (f"{s}/u{i}.flac", f"{s}/u{j}.flac")
        for s in held for i, j in itertools.combinations(range(CLIPS), 2)
    }
    assert targets == every_pair  # every target pair, once, enrol first in path order
    nontargets = [t for t in trials if t.label == 0]
    assert len(nontargets) == len(targets) == 3 * 6
    assert all(t.enrol.split("/")[0] != t.test.split("/")[0] for t in nontargets)
    assert len({frozenset((t.enrol, t.test)) for t in nontargets}) == len(nontargets)
    report = json.loads((save / "prepare_report.json").read_text())
    counts = report["threshold_trials"]
    assert (counts["target"], counts["nontarget"], counts["speakers"]) == (18, 18, 3)
    options = json.loads((save / "prepare_options.json").read_text())["options"]
    assert options["n_threshold_speakers"] == 3
    # the test speakers are drawn as without the option: the same test set, the same trials
    plain = prepare(corpus, tmp_path / "plain")
    assert set(plain["test_speakers"]) == test
    assert (tmp_path / "plain" / "trials.txt").read_bytes() == (save / "trials.txt").read_bytes()


def test_same_seed_same_slice_other_seeds_other_speakers(corpus, tmp_path):
    first = prepare(corpus, tmp_path / "a", n_threshold_speakers=3, seed=7)
    second = prepare(corpus, tmp_path / "b", n_threshold_speakers=3, seed=7)
    assert first["threshold_speakers"] == second["threshold_speakers"]
    for name in ("threshold_trials.txt", "train.csv", "dev.csv", "trials.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    chosen = {tuple(prepare(corpus, tmp_path / f"seed{seed}", n_threshold_speakers=3,
                            seed=seed)["threshold_speakers"]) for seed in range(4)}
    assert len(chosen) > 1


def test_zero_changes_nothing(corpus, tmp_path):
    """n_threshold_speakers=0 writes what a preparation without the option writes, byte for
    byte (prepare_options.json included), and an earlier preparation stays up to date."""
    save = tmp_path / "prep"
    summary = prepare(corpus, save)
    before = contents(save)
    assert set(before) == BASE_OUTPUTS
    assert "n_threshold_speakers" not in json.loads(before["prepare_options.json"])["options"]
    assert "threshold_speakers" not in summary and "threshold_trials" not in summary
    assert prepare(corpus, save, n_threshold_speakers=0)["skipped"] is True
    again = tmp_path / "again"
    prepare(corpus, again, n_threshold_speakers=0)
    moved = {name: data.replace(str(again).encode(), str(save).encode())
             for name, data in contents(again).items()}
    assert moved == before


def test_changing_the_option_prepares_again(corpus, tmp_path):
    save = tmp_path / "prep"
    prepare(corpus, save)
    plain_train = (save / "train.csv").read_bytes()
    three = prepare(corpus, save, n_threshold_speakers=3)
    assert three["skipped"] is False and (save / "threshold_trials.txt").is_file()
    assert (save / "train.csv").read_bytes() != plain_train
    assert prepare(corpus, save, n_threshold_speakers=3)["skipped"] is True
    (save / "threshold_trials.txt").unlink()  # an output missing: redone
    assert prepare(corpus, save, n_threshold_speakers=3)["skipped"] is False
    assert (save / "threshold_trials.txt").is_file()
    two = prepare(corpus, save, n_threshold_speakers=2)
    assert two["skipped"] is False and len(two["threshold_speakers"]) == 2
    assert len(read_trial_list(str(save / "threshold_trials.txt"))) == 2 * 2 * 6
    back = prepare(corpus, save, n_threshold_speakers=0)
    assert back["skipped"] is False
    assert not (save / "threshold_trials.txt").exists()  # its speakers train again
    assert (save / "train.csv").read_bytes() == plain_train


def test_trials_are_capped_seeded(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "MAX_THRESHOLD_TRIALS", 10)
    prepare(corpus, tmp_path / "a", n_threshold_speakers=3)
    prepare(corpus, tmp_path / "b", n_threshold_speakers=3)
    trials = read_trial_list(str(tmp_path / "a" / "threshold_trials.txt"))
    assert sum(t.label == 1 for t in trials) == 5 and sum(t.label == 0 for t in trials) == 5
    text = (tmp_path / "a" / "threshold_trials.txt").read_bytes()
    assert text == (tmp_path / "b" / "threshold_trials.txt").read_bytes()


def test_refusals_name_the_numbers(corpus, tmp_path):
    save = tmp_path / "prep"
    for bad in (1, -1, 2.5, True, None):
        with pytest.raises(ValueError, match=r"must be 0 \(off\) or an integer of at least 2"):
            prepare(corpus, save, n_threshold_speakers=bad)
    # 12 speakers - 3 test - 5 held out = 4 training speakers < 5
    left = r"n_threshold_speakers=5 leaves 4 training speakers \(of 9 speakers outside the 3 test"
    with pytest.raises(ValueError, match=left + r".*at least 5 are needed"):
        prepare(corpus, save, n_threshold_speakers=5)
    with pytest.raises(ValueError, match=r"n_threshold_speakers=10, but only 9 of the 9 speakers"):
        prepare(corpus, save, n_threshold_speakers=10)
    few = make_corpus(tmp_path / "few", clips={s: 1 for s in SPEAKERS} | {"s00": 3, "s01": 3})
    with pytest.raises(ValueError, match=r"n_threshold_speakers=2, but only 1 of the 11 speakers "
                                         r"outside the test set have at least 2 usable files"):
        prepare_folder_corpus(few, str(save), test_speakers=["s00"], min_utts_train=1,
                              n_threshold_speakers=2, verbose=False)
    assert not save.exists()  # nothing written


def test_command_line(corpus, tmp_path, capsys):
    save = tmp_path / "prep"
    code = prep.main(["folder", corpus, str(save), "--n-test-speakers", "3",
                      "--n-threshold-speakers", "3"])
    assert code == 0
    assert "threshold_trials.txt: 36 trials (18 target, 18 non-target) of 3 threshold speakers" in (
        capsys.readouterr().out)
    assert len(json.loads((save / "prepare_report.json").read_text())["threshold_speakers"]) == 3


def test_command_line_refusal(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        prep.main(["folder", corpus, str(tmp_path / "prep"), "--n-test-speakers", "3",
                   "--n-threshold-speakers", "1"])
    assert caught.value.code == 2
    assert "n_threshold_speakers must be 0" in capsys.readouterr().err


def recipe_module():
    spec = importlib.util.spec_from_file_location(
        "fefa_recipe_train", RECIPE / "train_speaker_embeddings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_training_yaml_has_the_key_and_the_recipe_passes_it(corpus, tmp_path):
    for yaml_path in sorted((RECIPE / "hparams").glob("train_*.yaml")):
        hparams = load_hparams(yaml_path, {"data_folder": corpus, "n_speakers": 3})
        expected = 10 if yaml_path.name == "train_ecapa_fefa_small.yaml" else 0
        assert hparams["n_threshold_speakers"] == expected, yaml_path.name
    with pytest.raises(ValueError, match="n_threshold_speakers"):
        load_hparams(RECIPE / "hparams" / "train_vggm_tap.yaml",
                     {"data_folder": corpus, "n_threshold_speakers": -1})
    hparams = {
        "corpus": "folder", "data_folder": corpus, "prep_folder": str(tmp_path / "prep"),
        "verification_file": None, "split_ratio": [90, 10], "seg_dur": 3.0,
        "check_audio": "full", "prep_jobs": 1, "seed": 1986, "test_speakers": None,
        "n_test_speakers": 3, "n_threshold_speakers": 2,
    }
    summary = recipe_module().prepare_data(hparams)
    assert len(summary["threshold_speakers"]) == 2
    assert (tmp_path / "prep" / "threshold_trials.txt").is_file()


def test_experiments_saved_before_the_key_ran_without_threshold_speakers():
    """A run resumes an experiment whose saved yaml has no n_threshold_speakers with 0;
    another value is another experiment (refused before the preparation rewrites CSVs)."""
    assert hparams_differences({"seed": 1}, {"seed": 1, "n_threshold_speakers": 0}) == []
    assert hparams_differences({"seed": 1}, {"seed": 1, "n_threshold_speakers": 10}) == [
        "n_threshold_speakers: 0 -> 10"
    ]


# ---------------------------------------------------------------------------- export


def make_experiment(folder, corpus, prep_folder):
    """A training output folder of train_ecapa_fefa.yaml (16 channels) on the prepared
    corpus, with one checkpoint (untrained weights)."""
    speakers = sorted(csv_speakers(Path(prep_folder) / "train.csv"))
    overrides = yaml.safe_dump({
        "corpus": "folder", "data_folder": corpus, "verification_file": None,
        "prep_folder": str(prep_folder), "output_folder": str(folder), "skip_prep": True,
        "n_speakers": len(speakers), "ecapa_channels": 16, "emb_dim": 32,
    })
    yaml_file = RECIPE / "hparams" / "train_ecapa_fefa.yaml"
    hparams = load_hparams(yaml_file, overrides)
    sb.create_experiment_directory(str(folder), hyperparams_to_save=str(yaml_file),
                                   overrides=overrides)
    hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": 0.5})
    labels = CategoricalEncoder()
    labels.update_from_iterable(speakers)
    labels.save(Path(folder) / "save" / "label_encoder.txt")
    return folder


def test_prepared_threshold_trials_are_found_with_their_corpus(corpus, tmp_path):
    save = tmp_path / "prep"
    assert prepared_threshold_trials(str(save)) is None
    prepare(corpus, save)
    assert prepared_threshold_trials(str(save)) is None
    prepare(corpus, save, n_threshold_speakers=3)
    assert prepared_threshold_trials(str(save)) == (str(save / "threshold_trials.txt"), corpus)
    (save / "prepare_report.json").unlink()  # a list without a report: the given corpus
    found = prepared_threshold_trials(str(save), "/data")
    assert found == (str(save / "threshold_trials.txt"), "/data")


def test_export_sets_thresholds_on_the_held_out_speakers_by_default(
    corpus, tmp_path, monkeypatch, capsys
):
    prep_folder = tmp_path / "prep"
    prepare(corpus, prep_folder, n_threshold_speakers=3)
    experiment = make_experiment(tmp_path / "experiment", corpus, prep_folder)
    out = tmp_path / "pretrained"
    monkeypatch.setattr("sys.argv", ["export_pretrained.py", str(experiment), str(out)])
    runpy.run_path(str(RECIPE / "export_pretrained.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert f"Thresholds from {prep_folder / 'threshold_trials.txt'}" in printed
    thresholds = json.loads((out / "config.json").read_text())["thresholds"]
    phrase = "trials of 3 held-out speakers unseen in training: threshold_trials.txt"
    assert phrase in thresholds["eer"]["description"]
    assert phrase in thresholds["far_1pct"]["description"]
    assert thresholds["trials"] | {"speakers": "unseen", "n_speakers": 3, "n_target": 18,
                                   "n_nontarget": 18} == thresholds["trials"]
    assert phrase in (out / "README.md").read_text()

    # --threshold_trials=none: no thresholds
    monkeypatch.setattr("sys.argv", ["export_pretrained.py", str(experiment), str(out),
                                     "--overwrite", "--threshold_trials=none"])
    runpy.run_path(str(RECIPE / "export_pretrained.py"), run_name="__main__")
    assert "thresholds" not in json.loads((out / "config.json").read_text())

    # a list whose speakers train is not described as held out: refused
    stale = _training_trials(prep_folder, corpus, tmp_path)
    with pytest.raises(ValueError, match="declared as trials of speakers not used in training"):
        export_pretrained(experiment, tmp_path / "other", threshold_trials=str(stale),
                          audio_root=corpus, threshold_held_out=True)
    assert not (tmp_path / "other").exists()


def _training_trials(prep_folder, corpus, tmp_path):
    """A trial list of two training speakers' files."""
    with open(Path(prep_folder) / "train.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row["spk_id"], []).append(os.path.relpath(row["wav"], corpus))
    (a, files_a), (b, files_b) = sorted(by_speaker.items())[:2]
    path = tmp_path / "training_trials.txt"
    path.write_text(f"1 {files_a[0]} {files_a[1]}\n0 {files_a[0]} {files_b[0]}\n")
    return path
