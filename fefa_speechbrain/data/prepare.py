"""Data preparation: SpeechBrain-compatible CSV manifests for VoxCeleb and any folder corpus.

:func:`prepare_voxceleb` and :func:`prepare_folder_corpus` check their options, find the
files (:mod:`~fefa_speechbrain.data.scan`), check the audio, split train/dev, and write
``train.csv``, ``dev.csv``, ``enrol.csv``, ``test.csv``, ``trials.txt`` and a report
(:mod:`~fefa_speechbrain.data.manifests`); a preparation that is up to date is not redone.
With ``n_threshold_speakers``, a folder corpus also leaves that many speakers out of
training and writes their trials to ``threshold_trials.txt`` (decision thresholds set on
speakers the model never saw).
``python -m fefa_speechbrain.data.prepare`` is the command line.

Details: ``docs/reference.md`` (fefa_speechbrain.data.prepare).
"""

import argparse
import json
import logging
import numbers
import os
import random
import sys
from collections import defaultdict

from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.data.audio import CHECK_MODES
from fefa_speechbrain.data.manifests import (
    REPORT_FILE,
    THRESHOLD_TRIALS_FILE,
    input_fingerprint,
    inspect_all,
    new_report,
    previous_summary,
    split_train_dev,
    test_outputs,
    training_outputs,
    write_outputs,
)
from fefa_speechbrain.data.scan import (
    scan_folder,
    scan_voxceleb,
    trial_speakers,
    trial_utterances,
    unpack_vox1_test,
    utterance_index,
)
from fefa_speechbrain.data.trials import format_trial_line, generate_trials, read_trial_list

logger = logging.getLogger(__name__)


SPLITS = ("train", "dev", "test")
# Threshold speakers (prepare_folder_corpus, n_threshold_speakers): at most this many
# trials (half target), at least this many clips each, and a training set of at least
# MIN_TRAINING_SPEAKERS and no fewer speakers than are held out for thresholds.
MAX_THRESHOLD_TRIALS = 20000
MIN_THRESHOLD_CLIPS = 2
MIN_TRAINING_SPEAKERS = 2

# ----------------------------------------------------------------------------- public API


def prepare_voxceleb(
    data_folder,
    save_folder,
    verification_file=None,
    splits=SPLITS,
    split_ratio=(90, 10),
    seg_dur=3.0,
    source=None,
    split_speaker=False,
    random_segment=False,
    skip_prep=False,
    check_audio="full",
    n_jobs=1,
    seed=1234,
    verbose=True,
):
    """Prepares VoxCeleb1 and/or VoxCeleb2 (``<root>/wav/idNNNNN/<video>/<utt>.wav``).

    Arguments
    ---------
    data_folder : str or list of str
        One or more roots (a list, or a comma-separated string as in SpeechBrain).
    save_folder : str
        Where the CSVs, ``trials.txt`` and the report go.
    verification_file : str
        Trial list (e.g. ``veri_test2.txt``), paths relative to ``<root>/wav``. Needed
        for ``"test"``. Its speakers (both columns) are removed from train and dev.
    splits : sequence of str
        Any of ``"train"``, ``"dev"``, ``"test"`` (test = enrol.csv, test.csv, trials.txt).
    split_ratio : pair of numbers
        Train / dev proportions.
    seg_dur : float
        Training chunk length in seconds.
    source : str
        Folder holding ``vox1_test_wav.zip`` (and optionally ``meta``); unpacked into
        the first data folder when its ``wav/id10270`` is missing (as in SpeechBrain).
    split_speaker : bool
        Speaker-disjoint train/dev split.
    random_segment : bool
        One row per file instead of fixed chunks.
    skip_prep : bool
        Do nothing (returns ``{"skipped": True}``).
    check_audio : str
        ``"full"``, ``"header"`` or ``"none"`` (see the module docstring).
    n_jobs : int
        Processes for the audio check.
    seed : int
        Seed of every random choice.
    verbose : bool
        Print the summary.

    Returns
    -------
    dict
        The summary (also in ``prepare_report.json``) with ``skipped``.

    Raises
    ------
    FileNotFoundError
        A data folder without ``wav/``.
    ValueError
        Bad options, m4a files (with the ffmpeg command), a malformed trial list.
    """
    if skip_prep:
        return {"skipped": True}
    splits = _check_common_options(splits, split_ratio, seg_dur, check_audio, n_jobs)
    roots = _data_folders(data_folder)
    if source is not None:
        unpack_vox1_test(source, roots[0])
    if "test" in splits and verification_file is None:
        raise ValueError(
            "prepare_voxceleb: splits include 'test' but verification_file is None; "
            "give the trial list (e.g. veri_test2.txt) or leave 'test' out of splits"
        )
    ignored = []
    utterances = scan_voxceleb(roots, ignored)
    index = utterance_index(utterances)
    trials = None
    if verification_file is not None:
        where = ", ".join(os.path.join(root, "wav") for root in roots)
        trials = read_trial_list(verification_file, resolve=index.__contains__, where=where)
    options, fingerprint, previous = _earlier_run(
        save_folder, utterances, verification_file, verbose, corpus="voxceleb",
        data_folder=roots, splits=splits, split_ratio=list(split_ratio), seg_dur=seg_dur,
        split_speaker=split_speaker, random_segment=random_segment, check_audio=check_audio,
        seed=seed,
    )
    if previous is not None:
        return previous

    excluded = trial_speakers(trials, index)
    pool = []
    if {"train", "dev"} & set(splits):
        pool = [u for u in utterances if u.speaker not in excluded]
        pool = without_test_audio(pool, [u for u in utterances if u.speaker in excluded], ignored)
    tested = trial_utterances(trials, index) if "test" in splits else []
    infos = inspect_all(pool + tested, check_audio, n_jobs)
    usable = [u for u in pool if infos[u.path].ok]
    train, dev = split_train_dev(usable, split_ratio, split_speaker, seed)
    report = new_report("voxceleb", roots, save_folder, check_audio, len(utterances), infos)
    add_ignored(report, ignored)
    report["excluded_speakers"] = sorted(excluded)
    outputs = training_outputs(train, dev, splits, infos, seg_dur, random_segment, report)
    if "test" in splits:
        outputs.update(test_outputs(trials, index, infos, report, generated=False))
    return write_outputs(save_folder, outputs, report, options, fingerprint, verbose)



def prepare_folder_corpus(
    data_folder,
    save_folder,
    verification_file=None,
    test_speakers=None,
    n_test_speakers=None,
    n_trials=None,
    min_utts_train=2,
    min_utts_test=2,
    splits=SPLITS,
    split_ratio=(90, 10),
    seg_dur=3.0,
    check_audio="full",
    n_jobs=1,
    seed=1234,
    extensions=(".wav", ".flac", ".ogg"),
    verbose=True,
    n_threshold_speakers=0,
):
    """Prepares a corpus laid out as ``<root>/<speaker>/[<session>/]<utt>.<ext>``.

    Any format soundfile reads can be listed in ``extensions``; other files and files at
    other depths are ignored (a README or metadata.csv at the root does no harm).

    Test speakers: ``test_speakers`` (ids, or the path of a text file with one id per
    line; blank lines and ``#`` comments ignored), else ``n_test_speakers`` drawn with
    ``seed`` among the speakers with at least ``min_utts_test`` usable files, else the
    speakers of ``verification_file``. The speakers of the trial list and the test
    speakers never appear in train or dev. Without a trial list, a listed test speaker
    with fewer than ``min_utts_test`` usable files is left out of the test set too; other
    speakers with fewer than ``min_utts_train`` usable files are dropped from training
    (both reported in ``dropped_speakers``).

    Without a trial list, one is generated (seeded, :func:`generate_trials`) from the
    usable files of the test speakers: every target pair (a random ``n_trials // 2`` of
    them when ``n_trials`` is set and smaller) and as many distinct random non-target
    pairs (all of them when there are fewer), written to ``trials.txt`` as
    ``label enrol test`` with paths relative to ``data_folder``.

    Threshold speakers: with ``n_threshold_speakers=N`` (0, the default, turns it off
    and changes nothing), N speakers outside the test set with at least 2 usable files
    are drawn with ``seed`` and left out of train and dev (their audio too, under any
    other name through links); ``threshold_trials.txt`` holds their trials in the format
    of ``trials.txt``: every target pair (a seeded :data:`MAX_THRESHOLD_TRIALS` ``// 2``
    when there are more) and as many seeded non-target pairs. Decision thresholds set on
    them hold for speakers the model never saw (``export_pretrained.py`` uses the list
    by default). Refused when fewer than 2 such speakers exist or when fewer than
    :data:`MIN_TRAINING_SPEAKERS` (or fewer than N) training speakers would be left.

    Arguments
    ---------
    data_folder : str
        The corpus root.
    save_folder : str
        Output folder.
    verification_file : str
        Optional trial list, paths relative to ``data_folder``.
    test_speakers : list of str or str
        Speaker ids, or the path of a file with one id per line.
    n_test_speakers : int
        Number of test speakers to draw when ``test_speakers`` is not given.
    n_trials : int
        Cap on the number of generated trials.
    min_utts_train : int
        Minimum usable files of a training speaker.
    min_utts_test : int
        Minimum usable files of a test speaker (generated trials only).
    extensions : sequence of str
        Audio file extensions to collect (case-insensitive).
    n_threshold_speakers : int
        Speakers held out of training for ``threshold_trials.txt`` (0: none; else >= 2).
    splits, split_ratio, seg_dur, check_audio, n_jobs, seed, verbose
        As for :func:`prepare_voxceleb`, which also returns the same summary.

    Example
    -------
    >>> import os, tempfile, numpy as np, soundfile as sf
    >>> root = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for spk in ["a", "b", "c", "d"]:
    ...     os.makedirs(os.path.join(root, spk))
    ...     for i in range(3):
    ...         noise = 0.1 * rng.standard_normal(16000)
    ...         sf.write(os.path.join(root, spk, f"u{i}.flac"), noise, 16000)
    >>> save = os.path.join(tempfile.mkdtemp(), "csv")
    >>> summary = prepare_folder_corpus(root, save, test_speakers=["c", "d"], verbose=False)
    >>> summary["trials"]["target"], summary["trials"]["nontarget"], summary["train"]["speakers"]
    (6, 6, 2)
    >>> prepare_folder_corpus(root, save, test_speakers=["c", "d"], verbose=False)["skipped"]
    True
    >>> for spk in ["e", "f", "g", "h"]:
    ...     os.makedirs(os.path.join(root, spk))
    ...     for i in range(3):
    ...         noise = 0.1 * rng.standard_normal(16000)
    ...         sf.write(os.path.join(root, spk, f"u{i}.flac"), noise, 16000)
    >>> summary = prepare_folder_corpus(root, save, test_speakers=["c", "d"], verbose=False,
    ...                                 n_threshold_speakers=2)
    >>> held, train = summary["threshold_trials"], summary["train"]
    >>> summary["threshold_speakers"], held["target"], held["nontarget"], train["speakers"]
    (['a', 'f'], 6, 6, 4)
    """
    splits = _check_common_options(splits, split_ratio, seg_dur, check_audio, n_jobs)
    _check_folder_options(
        verification_file, test_speakers, n_test_speakers, n_trials,
        min_utts_train, min_utts_test, splits, n_threshold_speakers,
    )
    n_threshold_speakers = int(n_threshold_speakers)
    roots = _data_folders(data_folder)
    if len(roots) != 1:
        raise ValueError(f"prepare_folder_corpus: give one data folder, got {roots}")
    extensions = sorted({"." + ext.lower().lstrip(".") for ext in extensions})
    ignored = []
    utterances = scan_folder(roots[0], extensions, ignored)
    index = utterance_index(utterances)
    trials = None
    if verification_file is not None:
        trials = read_trial_list(
            verification_file, resolve=index.__contains__, where=roots[0]
        )
    listed = None
    if test_speakers is not None:
        listed = _read_speaker_list(test_speakers, {u.speaker for u in utterances})
    options, fingerprint, previous = _earlier_run(
        save_folder, utterances, verification_file, verbose, corpus="folder",
        data_folder=roots, test_speakers=listed, n_test_speakers=n_test_speakers,
        n_trials=n_trials, min_utts_train=min_utts_train, min_utts_test=min_utts_test,
        splits=splits, split_ratio=list(split_ratio), seg_dur=seg_dur,
        check_audio=check_audio, seed=seed, extensions=extensions,
        # only when on: a preparation without threshold speakers stays as it was
        **({"n_threshold_speakers": n_threshold_speakers} if n_threshold_speakers else {}),
    )
    if previous is not None:
        return previous

    infos = inspect_all(utterances, check_audio, n_jobs)
    usable = defaultdict(list)
    for utt in utterances:
        if infos[utt.path].ok:
            usable[utt.speaker].append(utt)
    report = new_report("folder", roots, save_folder, check_audio, len(utterances), infos)
    dropped = {}
    test_set = set()
    if listed is not None or n_test_speakers is not None or trials is not None:
        test_set = _choose_test_speakers(
            listed, n_test_speakers, trials, index, usable, min_utts_test, seed, dropped
        )
    excluded = test_set | set(listed or ()) | trial_speakers(trials, index)
    held_out = [u for u in utterances if u.speaker in excluded]
    candidates = sorted({u.speaker for u in utterances} - excluded)
    threshold_set, threshold_pool = [], []
    if n_threshold_speakers:
        threshold_set, threshold_pool = _choose_threshold_speakers(
            candidates, usable, held_out, n_threshold_speakers, seed, ignored
        )
        held_out = held_out + threshold_pool  # their audio stays out of training too
    training = []
    for speaker in candidates:
        if speaker in threshold_set:
            continue
        files = without_test_audio(usable[speaker], held_out, ignored)
        if len(files) < min_utts_train:
            dropped[speaker] = f"{len(files)} usable files < min_utts_train={min_utts_train}"
        else:
            training.extend(files)
    if n_threshold_speakers:
        _check_training_left(
            len({u.speaker for u in training}), n_threshold_speakers, len(candidates), len(test_set)
        )
    train, dev = split_train_dev(training, split_ratio, False, seed)
    add_ignored(report, ignored)
    report["test_speakers"] = sorted(test_set)
    report["dropped_speakers"] = dropped
    outputs = training_outputs(train, dev, splits, infos, seg_dur, False, report)
    if n_threshold_speakers:
        outputs.update(_threshold_outputs(threshold_set, threshold_pool, seed, report))
    if "test" in splits:
        generated = trials is None
        if generated:
            pool = [u for speaker in sorted(test_set) for u in usable[speaker]]
            trials = generate_trials(pool, n_trials=n_trials, seed=seed)
        outputs.update(test_outputs(trials, index, infos, report, generated))
    return write_outputs(save_folder, outputs, report, options, fingerprint, verbose)


def without_test_audio(candidates, held_out, ignored):
    """``candidates`` without the files that are, through links, held-out audio.

    A speaker folder linked to a test speaker's folder (or a linked file) would put test
    audio into training under another name; such files are left out and reported.

    Example
    -------
    >>> import os, tempfile
    >>> from fefa_speechbrain.data.scan import Utterance
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(f"{root}/test_spk"); _ = open(f"{root}/test_spk/a.wav", "w").write("x")
    >>> os.symlink(f"{root}/test_spk", f"{root}/train_spk")
    >>> test = Utterance(("test_spk", "a"), "test_spk/a.wav", f"{root}/test_spk/a.wav", 1)
    >>> alias = Utterance(("train_spk", "a"), "train_spk/a.wav", f"{root}/train_spk/a.wav", 1)
    >>> ignored = []
    >>> without_test_audio([alias], [test], ignored), ignored[0]["reasons"]
    ([], ['the same file as held-out test_spk/a.wav (through a link): left out of training'])
    """
    real = {os.path.realpath(u.path): u.rel for u in held_out}
    kept = []
    for utt in candidates:
        twin = real.get(os.path.realpath(utt.path))
        if twin is None:
            kept.append(utt)
        else:
            ignored.append({
                "path": utt.path, "action": "skipped",
                "reasons": [f"the same file as held-out {twin} (through a link): left out of training"],
            })
    return kept


def add_ignored(report, ignored):
    """Adds the files the scan did not use to the report's problems (all "skipped")."""
    report["problems"].extend(ignored)
    report["n_skipped"] += len(ignored)


def prepared_threshold_trials(prep_folder, data_folder=None):
    """``(path, audio_root)`` of a preparation's ``threshold_trials.txt``, or None.

    The audio root is the corpus the preparation read (its ``prepare_report.json``),
    else ``data_folder`` (a folder holding the list without a report), else None.

    Example
    -------
    >>> prepared_threshold_trials("/nonexistent/prepared") is None
    True
    """
    if not prep_folder:
        return None
    path = os.path.join(os.fspath(prep_folder), THRESHOLD_TRIALS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(os.path.join(os.fspath(prep_folder), REPORT_FILE), encoding="utf-8") as handle:
            roots = json.load(handle).get("data_folder")
    except (OSError, ValueError, AttributeError):
        roots = None
    if isinstance(roots, list) and len(roots) == 1:
        return path, roots[0]
    return path, None if data_folder is None else os.fspath(data_folder)


def _choose_threshold_speakers(candidates, usable, held_out, count, seed, ignored):
    """(sorted speakers, their usable files): ``count`` seeded speakers of ``candidates``
    with at least :data:`MIN_THRESHOLD_CLIPS` usable files that are not held-out audio."""
    clean, notes = {}, {}
    for speaker in candidates:
        notes[speaker] = []
        clean[speaker] = without_test_audio(usable[speaker], held_out, notes[speaker])
    eligible = [s for s in candidates if len(clean[s]) >= MIN_THRESHOLD_CLIPS]
    if len(eligible) < count:
        raise ValueError(
            f"n_threshold_speakers={count}, but only {len(eligible)} of the {len(candidates)} "
            f"speakers outside the test set have at least {MIN_THRESHOLD_CLIPS} usable files; "
            "lower n_threshold_speakers (0 turns threshold speakers off)"
        )
    chosen = sorted(random.Random(f"{seed}:threshold-speakers").sample(eligible, count))
    for speaker in chosen:
        ignored.extend(notes[speaker])
    return chosen, [u for speaker in chosen for u in clean[speaker]]


def _check_training_left(n_training, n_threshold, n_candidates, n_test):
    needed = max(MIN_TRAINING_SPEAKERS, n_threshold)
    if n_training < needed:
        raise ValueError(
            f"n_threshold_speakers={n_threshold} leaves {n_training} training speakers (of "
            f"{n_candidates} speakers outside the {n_test} test speakers, after min_utts_train); "
            f"at least {needed} are needed ({MIN_TRAINING_SPEAKERS}, and no fewer than the "
            "threshold speakers): lower n_threshold_speakers (0 turns it off) or hold out fewer "
            "test speakers"
        )


def _threshold_outputs(speakers, pool, seed, report):
    """``threshold_trials.txt`` of the threshold speakers' files, and the report's entries."""
    trials = generate_trials(pool, n_trials=MAX_THRESHOLD_TRIALS, seed=f"{seed}:threshold")
    report["threshold_speakers"] = list(speakers)
    report["threshold_trials"] = {
        "file": os.path.join(report["save_folder"], THRESHOLD_TRIALS_FILE),
        "speakers": len(speakers),
        "files": len(pool),
        "n": len(trials),
        "target": sum(t.label == 1 for t in trials),
        "nontarget": sum(t.label == 0 for t in trials),
        "max_trials": MAX_THRESHOLD_TRIALS,
    }
    return {THRESHOLD_TRIALS_FILE: "".join(format_trial_line(t) for t in trials)}


# ------------------------------------------------------------------------- option checking


def _check_common_options(splits, split_ratio, seg_dur, check_audio, n_jobs):
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {splits}")
    ratio = list(split_ratio)
    if len(ratio) != 2 or min(ratio) < 0 or ratio[0] <= 0:
        raise ValueError(
            f"split_ratio must be two numbers (train, dev), train > 0, got {split_ratio}"
        )
    if not seg_dur > 0:
        raise ValueError(f"seg_dur must be positive seconds, got {seg_dur}")
    check_choice("check_audio", check_audio, CHECK_MODES)
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    return [s for s in SPLITS if s in splits]


def _check_folder_options(
    trial_file, test_speakers, n_test_speakers, n_trials, min_utts_train, min_utts_test, splits,
    n_threshold_speakers=0,
):
    if test_speakers is not None and n_test_speakers is not None:
        raise ValueError("give test_speakers or n_test_speakers, not both")
    if trial_file is not None and (n_test_speakers is not None or n_trials is not None):
        raise ValueError(
            "n_test_speakers and n_trials shape generated trials; they cannot be combined "
            f"with verification_file={trial_file}"
        )
    nobody = test_speakers is None and n_test_speakers is None and trial_file is None
    if "test" in splits and nobody:
        raise ValueError(
            "prepare_folder_corpus: say who the test speakers are: test_speakers, "
            "n_test_speakers or verification_file (or leave 'test' out of splits)"
        )
    for name, value in (
        ("n_test_speakers", n_test_speakers), ("n_trials", n_trials),
        ("min_utts_train", min_utts_train), ("min_utts_test", min_utts_test),
    ):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    count = n_threshold_speakers
    is_int = isinstance(count, numbers.Integral) and not isinstance(count, bool)
    if not is_int or count < 0 or count == 1:
        raise ValueError(
            "n_threshold_speakers must be 0 (off) or an integer of at least 2 (speakers held "
            f"out of training for threshold_trials.txt), got {count!r}"
        )


def _data_folders(data_folder):
    if isinstance(data_folder, (str, os.PathLike)):
        folders = [f.strip() for f in os.fspath(data_folder).split(",") if f.strip()]
    else:
        folders = [os.fspath(f) for f in data_folder]
    if not folders:
        raise ValueError(f"no data folder given: {data_folder!r}")
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"data folder {folder} does not exist")
    return [os.path.abspath(f) for f in folders]


def _earlier_run(save_folder, utterances, verification_file, verbose, corpus, data_folder,
                 **settings):
    """(options, fingerprint, summary of an earlier run that is still up to date or None).

    The options are saved with the outputs; the trial list is stored under its old name
    ``verification_pairs_file`` so that earlier preparations stay valid.
    """
    options = {
        "corpus": corpus,
        "data_folder": data_folder,
        "verification_pairs_file": _abs_or_none(verification_file),
        **settings,
    }
    fingerprint = input_fingerprint(utterances, verification_file)
    previous = previous_summary(save_folder, options, fingerprint, settings["splits"], verbose)
    return options, fingerprint, previous


def _abs_or_none(path):
    return None if path is None else os.path.abspath(os.fspath(path))


def _read_speaker_list(test_speakers, known):
    if isinstance(test_speakers, (str, os.PathLike)):
        source = os.fspath(test_speakers)
        if not os.path.isfile(source):
            raise FileNotFoundError(
                f"test_speakers file {source} does not exist (pass a list to give ids directly)"
            )
        with open(source, encoding="utf-8") as handle:
            ids = [line.split("#")[0].strip() for line in handle]
        ids = [i for i in ids if i]
    else:
        source, ids = "test_speakers", [str(i) for i in test_speakers]
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} test speaker(s) not in the corpus: {unknown[:10]}"
        )
    if not ids:
        raise ValueError(f"{source}: the test speaker list is empty")
    return sorted(set(ids))


def _choose_test_speakers(listed, n_test_speakers, trials, index, usable, min_utts, seed, dropped):
    """The test speakers; records the listed ones without enough usable files."""
    if trials is not None:
        return trial_speakers(trials, index) | set(listed or ())
    if listed is not None:
        chosen = set()
        for speaker in listed:
            count = len(usable[speaker])
            if count < min_utts:
                dropped[speaker] = (
                    f"test speaker with {count} usable files < min_utts_test={min_utts}"
                )
            else:
                chosen.add(speaker)
        return chosen
    eligible = sorted(s for s, utts in usable.items() if len(utts) >= min_utts)
    if n_test_speakers > len(eligible):
        raise ValueError(
            f"n_test_speakers={n_test_speakers} but only {len(eligible)} speakers have "
            f"at least min_utts_test={min_utts} usable files"
        )
    return set(random.Random(f"{seed}:test-speakers").sample(eligible, n_test_speakers))


# ------------------------------------------------------------------------------- CLI


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fefa_speechbrain.data.prepare",
        description="Write SpeechBrain-style CSVs (train, dev, enrol, test) and a trial list.",
    )
    sub = parser.add_subparsers(dest="corpus", required=True)
    vox = sub.add_parser("voxceleb", help="VoxCeleb1/2: DATA/wav/idNNNNN/<video>/<utt>.wav")
    folder = sub.add_parser("folder", help="any corpus: DATA/<speaker>/[<session>/]<utt>.<ext>")
    for p in (vox, folder):
        p.add_argument("data_folder", help="corpus root (voxceleb: several, comma-separated)")
        p.add_argument("save_folder")
        p.add_argument("--trials", dest="verification_file", help="trial list")
        p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
        p.add_argument("--split-ratio", nargs=2, type=float, default=[90, 10])
        p.add_argument("--seg-dur", type=float, default=3.0, help="chunk length in seconds")
        p.add_argument("--check-audio", choices=CHECK_MODES, default="full")
        p.add_argument("--jobs", dest="n_jobs", type=int, default=1)
        p.add_argument("--seed", type=int, default=1234)
    vox.add_argument("--source", help="folder with vox1_test_wav.zip to unpack")
    vox.add_argument("--split-speaker", action="store_true")
    vox.add_argument("--random-segment", action="store_true")
    folder.add_argument(
        "--test-speakers", help="file with one speaker id per line, or comma-separated ids"
    )
    folder.add_argument("--n-test-speakers", type=int)
    folder.add_argument("--n-trials", type=int)
    folder.add_argument("--min-utts-train", type=int, default=2)
    folder.add_argument("--min-utts-test", type=int, default=2)
    folder.add_argument("--extensions", nargs="+", default=[".wav", ".flac", ".ogg"])
    folder.add_argument(
        "--n-threshold-speakers", type=int, default=0,
        help="speakers left out of training for threshold_trials.txt (0: none)",
    )
    return parser, parser.parse_args(argv)


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser, args = _parse_args(argv)
    kwargs = vars(args)
    corpus = kwargs.pop("corpus")
    try:
        if corpus == "voxceleb":
            prepare_voxceleb(**kwargs)
        else:
            speakers = kwargs["test_speakers"]
            if speakers is not None and not os.path.isfile(speakers):
                kwargs["test_speakers"] = [s for s in speakers.split(",") if s.strip()]
            prepare_folder_corpus(**kwargs)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
