"""Where a model's decision thresholds come from, named truthfully, and what they give on test trials.

A threshold set on held-out clips of the *training* speakers is too lenient for new
speakers (the shipped model's EER threshold, 1.29 % EER there, misses 14.8 % of the
same-speaker pairs of 40 unseen speakers). :func:`threshold_source` says which kind of
trials a list is: the speakers of its files (the first folder of each path, the
``<speaker>/...`` layout of the recipe's corpora) are compared with the training
speakers (the ``spk_id`` column of the training CSV) when it is at hand, or taken as
declared. :func:`rates_at_thresholds` gives the false-accept and miss rates of stored
thresholds on other trials (the card's test figures).
"""

import csv
import os

import numpy as np

SPEAKER_KINDS = ("auto", "unseen", "training")


def trial_list_speakers(trials, audio_root):
    """Speakers of a trial list's files: the first folder of each path under ``audio_root``.

    Example
    -------
    >>> from fefa_speechbrain.data.trials import Trial
    >>> sorted(trial_list_speakers([Trial(1, "/d/a/1.wav", "/d/b/x/2.wav")], "/d"))
    ['a', 'b']
    """
    speakers = set()
    for trial in trials:
        for path in (trial.enrol, trial.test):
            rel = os.path.relpath(path, audio_root) if audio_root else path
            speakers.add(rel.replace(os.sep, "/").split("/")[0])
    return speakers


def csv_speakers(csv_path):
    """The ``spk_id`` values of a SpeechBrain CSV, or None when the file is not there."""
    if not csv_path or not os.path.isfile(csv_path):
        return None
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return {row["spk_id"] for row in csv.DictReader(handle)}


def threshold_source(name, speakers, training_speakers=None, declared="auto"):
    """What trials thresholds come from: kind and the phrase the descriptions use.

    Arguments
    ---------
    name : str
        The list's file name (no local path).
    speakers : set of str
        The speakers of its files (:func:`trial_list_speakers`).
    training_speakers : set of str
        The training CSV's speakers, or None when not available.
    declared : str
        ``"auto"`` (compare with the training speakers), ``"unseen"`` or ``"training"``
        (what the user says; checked when the training speakers are known).

    Returns
    -------
    dict : ``kind`` (unseen, training, mixed or unchecked), ``n_speakers``,
    ``n_training`` (of them in training, None if unknown), ``phrase``.

    Example
    -------
    >>> threshold_source("t.txt", {"a", "b"}, {"c"})["phrase"]
    'trials of 2 speakers not used in training: t.txt'
    >>> threshold_source("dev.txt", {"c"}, {"c", "d"})["phrase"]
    'trials of held-out clips of 1 training speakers: dev.txt (not new speakers)'
    >>> threshold_source("t.txt", {"a"}, {"a"}, declared="unseen")
    Traceback (most recent call last):
    ...
    ValueError: t.txt: declared as trials of speakers not used in training, but 1 of its 1 speakers are in the training CSV
    """
    if declared not in SPEAKER_KINDS:
        raise ValueError(f"threshold speakers: {declared!r} is not one of {SPEAKER_KINDS}")
    count = len(speakers)
    seen = None if training_speakers is None else len(speakers & training_speakers)
    if seen is not None and declared == "unseen" and seen:
        raise ValueError(
            f"{name}: declared as trials of speakers not used in training, but {seen} of its "
            f"{count} speakers are in the training CSV"
        )
    if seen is not None and declared == "training" and seen < count:
        raise ValueError(
            f"{name}: declared as trials of training speakers, but {count - seen} of its "
            f"{count} speakers are not in the training CSV"
        )
    if seen == 0 or (seen is None and declared == "unseen"):
        kind, phrase = "unseen", f"trials of {count} speakers not used in training: {name}"
    elif seen == count or (seen is None and declared == "training"):
        kind = "training"
        phrase = f"trials of held-out clips of {count} training speakers: {name} (not new speakers)"
    elif seen is None:
        kind = "unchecked"
        phrase = f"trials of {count} speakers (not compared with the training speakers): {name}"
    else:
        kind = "mixed"
        phrase = f"trials of {count} speakers, {seen} of them used in training: {name}"
    return {"kind": kind, "n_speakers": count, "n_training": seen, "phrase": phrase}


def rates_at_thresholds(scores, labels, thresholds):
    """False-accept and miss rates (fractions) of thresholds on scored trials.

    A trial is accepted when its score is at least the threshold (as ``verify``).

    Example
    -------
    >>> rates_at_thresholds([0.9, 0.2, 0.6, 0.1], [1, 1, 0, 0], {"eer": 0.5})
    {'eer': {'false_accept': 0.5, 'miss': 0.5}}
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    return {
        name: {
            "false_accept": float(np.mean(scores[~labels] >= value)),
            "miss": float(np.mean(scores[labels] < value)),
        }
        for name, value in thresholds.items()
    }
