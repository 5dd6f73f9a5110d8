"""Thresholds named by the speakers of their trials, and their rates on test trials in the card."""

import csv
import json
import re

import pytest

from fefa_speechbrain.data.trials import read_trials
from fefa_speechbrain.evaluation.thresholds import (
    rates_at_thresholds,
    threshold_source,
    trial_list_speakers,
)
from test_model_source import export_of
from test_robustness import FILES, make_experiment, write_corpus


def test_kinds():
    assert threshold_source("t", {"a"}, {"b"})["kind"] == "unseen"
    assert threshold_source("t", {"a"}, {"a", "b"})["kind"] == "training"
    mixed = threshold_source("t", {"a", "c"}, {"a"})
    assert mixed["kind"] == "mixed" and mixed["phrase"] == "trials of 2 speakers, 1 of them used in training: t"
    assert threshold_source("t", {"a"}, None)["kind"] == "unchecked"
    assert threshold_source("t", {"a"}, None, "unseen")["kind"] == "unseen"
    assert threshold_source("t", {"a"}, None, "training")["kind"] == "training"
    with pytest.raises(ValueError, match="1 of its 1 speakers are not in the training CSV"):
        threshold_source("t", {"a"}, {"b"}, "training")


def test_rates_accept_at_the_threshold():
    rates = rates_at_thresholds([0.5, 0.4, 0.5, 0.3], [1, 1, 0, 0], {"t": 0.5})["t"]
    assert rates == {"false_accept": 0.5, "miss": 0.5}


def test_export_names_trials_and_prints_test_rates(tmp_path):
    trials_file = write_corpus(str(tmp_path / "audio"))
    experiment = make_experiment(tmp_path / "experiment", "single", 4)
    # a training CSV naming spk1 only: the trials (spk1-3) are then "mixed"
    train_csv = tmp_path / "train.csv"
    with open(train_csv, "w", newline="") as handle:
        csv.writer(handle).writerows([["ID", "duration", "wav", "start", "stop", "spk_id"],
                                      ["u", "1.0", "x.wav", "0", "16000", "spk1"]])
    saved = tmp_path / "experiment" / "hyperparams.yaml"
    text = re.sub(r"(?m)^train_annotation: .*$", f"train_annotation: {train_csv}", saved.read_text())
    saved.write_text(text)
    folder = export_of(experiment, tmp_path / "pretrained", threshold_trials=trials_file,
                       test_trials=trials_file)
    config = json.loads((folder / "config.json").read_text())
    description = config["thresholds"]["eer"]["description"]
    assert description.startswith("EER threshold on trials of 3 speakers, 1 of them used in training")
    assert config["thresholds"]["trials"]["speakers"] == "mixed"
    rates = config["test_rates"]
    assert set(rates["at_thresholds"]) == {"eer", "far_1pct"}
    card = (folder / "README.md").read_text()
    assert "What the stored thresholds give on the test trials" in card
    assert f"| eer (cosine {config['thresholds']['eer']['value']:.4f}) |" in card
    # the trial speakers are the first folder of each path
    assert trial_list_speakers(read_trials(trials_file), str(tmp_path / "audio")) == {
        name.split("/")[0] for name in FILES}
