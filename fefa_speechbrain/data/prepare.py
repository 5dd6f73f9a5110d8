"""Data preparation: SpeechBrain-compatible CSV manifests for VoxCeleb and any folder corpus.

Output (in ``save_folder``)
---------------------------
The CSV format is the one of SpeechBrain's VoxCeleb recipe, so CSVs made by
SpeechBrain's own ``voxceleb_prepare.py`` work unchanged with this package and the other
way round. Columns, in this order: ``ID, duration, wav, start, stop, spk_id``.

- ``train.csv``, ``dev.csv``: training utterances cut into chunks of ``seg_dur`` seconds.
  ``ID`` is ``<spk>--<video>--<utt>_<start>_<stop>`` (``<spk>--<utt>_<start>_<stop>`` for
  a two-level folder corpus), ``duration`` the duration in seconds of the *whole* file
  (as SpeechBrain writes it: its random-chunk training reads it), ``wav`` the absolute
  path, ``start``/``stop`` the chunk's bounds in samples at 16 kHz, ``spk_id`` the speaker.
  (:func:`~fefa_speechbrain.data.audio.load_audio` counts samples at 16 kHz whatever the
  file's rate; SpeechBrain's torchaudio loader counts native samples, which is the same
  thing for 16 kHz corpora such as VoxCeleb.)
  Chunking: full chunks of ``seg_dur`` from the start; the last partial chunk is kept when
  it is at least 1 s long; a file shorter than ``seg_dur`` becomes one chunk of its own
  length (the training pipeline pads it). With ``random_segment=True`` every file is one
  row (start 0, stop = its length) and the training script draws random crops.
  Differences from SpeechBrain's script: its chunk IDs carry the bounds in seconds (ours
  in samples; nothing parses the IDs), it drops the remainder and the files shorter than
  ``seg_dur``, it drops near-silent chunks (our audio check skips silent files), it
  removes only the speakers of the trial list's first column from training (we remove
  both columns') and it splits train/dev by a global shuffle (see below).
- ``enrol.csv``, ``test.csv``: one row per distinct utterance of the first / second
  column of the trial list; ``ID`` is the trial-list path without extension (e.g.
  ``id10270/5r0dWxy17C8/00001``), ``start`` 0, ``stop`` the number of samples at 16 kHz.
- ``trials.txt``: the trial list to evaluate with, lines ``label enrol test`` (the
  ``veri_test2.txt`` format, paths relative to the corpus' audio root). It is the given
  list minus the trials that use a file the audio check skipped (listed in the report),
  or the generated list of a folder corpus.
- ``prepare_report.json``: every problematic file with its path, reasons and action
  (skipped / converted / kept with warning), dropped trials and speakers, row counts.
  The same summary is printed (up to 20 files per action; the report has them all).
- ``prepare_options.json``: the options and a fingerprint of the input files, written last.

Train/dev split
---------------
By utterance, stratified per speaker: each speaker keeps ``split_ratio`` of its files in
train (rounded, at least one) so every dev speaker is also a training class (SpeechBrain
builds the label encoder from the training set). With ``split_speaker=True`` whole
speakers go to dev instead (speaker-disjoint validation). The held-out part exists
whether or not ``dev`` is in ``splits``; ``split_ratio=(100, 0)`` trains on everything.
All randomness comes from ``seed``.

Audio check
-----------
``check_audio="full"`` reads every file needed and applies the policy of
:mod:`fefa_speechbrain.data.audio` (skip unreadable, empty, too short, NaN/inf and
silent files; down-mix and resample others at load time; warn about clipping).
``"header"`` reads headers only (fast; the content problems then surface at load time
as :class:`~fefa_speechbrain.data.audio.AudioError`). ``"none"`` applies no policy: the
headers are still read for the durations, and only files without a readable header or
without samples are left out. ``n_jobs`` processes check files in parallel. One bad file
never stops the preparation. For VoxCeleb2 (a million files, 2,300 hours) ``"full"``
reads every sample once; ``"header"`` with several ``n_jobs`` takes minutes.

Trial lists are validated before anything is written: lines without exactly 3 fields,
labels other than 0/1 and files that do not exist raise one :class:`ValueError` that lists
the first offending lines with their numbers.

Idempotence
-----------
A run whose options and input files (relative paths and sizes, trial-list content) match
those of ``prepare_options.json``, and whose outputs all exist, does nothing and returns
the previous summary with ``skipped=True``. Otherwise everything is redone. Every file is
written atomically and ``prepare_options.json`` is removed before the first CSV and
written after the last, so an interrupted run is always redone completely.

Command line::

    python -m fefa_speechbrain.data.prepare voxceleb DATA SAVE --trials veri_test2.txt
    python -m fefa_speechbrain.data.prepare folder DATA SAVE --test-speakers spk.txt
"""

import argparse
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from fefa_speechbrain.data.audio import (
    CHECK_MODES,
    AudioInfo,
    conversion_hint,
    inspect_audio,
    is_unsupported,
    resampled_length,
)
from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from fefa_speechbrain.data.trials import generate_trials, read_trial_list

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CSV_FIELDS = ["ID", "duration", "wav", "start", "stop", "spk_id"]
OPTIONS_FILE = "prepare_options.json"
REPORT_FILE = "prepare_report.json"
TRIALS_FILE = "trials.txt"
MIN_LAST_CHUNK_SECONDS = 1.0

SPLITS = ("train", "dev", "test")
MAX_LISTED = 20
VOX1_TEST_ZIP = "vox1_test_wav.zip"
FORMAT_VERSION = 1

@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus.

    Attributes
    ----------
    parts : tuple of str
        Path components below the audio root, extension removed:
        ``(speaker, video, utt)`` or ``(speaker, utt)``.
    rel : str
        Path below the audio root with extension, ``/``-separated (trial-list form).
    path : str
        Absolute path.
    size : int
        Bytes.
    root : int
        Index of the data folder it comes from.
    """

    parts: tuple
    rel: str
    path: str
    size: int
    root: int = 0

    @property
    def speaker(self):
        return self.parts[0]

    @property
    def uid(self):
        """Base of the training IDs: ``spk--video--utt``."""
        return "--".join(self.parts)

    @property
    def trial_id(self):
        """ID in enrol/test CSVs: the trial-list path without extension."""
        return "/".join(self.parts)


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
        _unpack_vox1_test(source, roots[0])
    if "test" in splits and verification_file is None:
        raise ValueError(
            "prepare_voxceleb: splits include 'test' but verification_file is None; "
            "give the trial list (e.g. veri_test2.txt) or leave 'test' out of splits"
        )
    utterances = _scan_voxceleb(roots)
    index = _index(utterances)
    trials = None
    if verification_file is not None:
        where = ", ".join(os.path.join(root, "wav") for root in roots)
        trials = read_trial_list(verification_file, resolve=index.__contains__, where=where)
    options = {
        "corpus": "voxceleb",
        "data_folder": roots,
        "verification_pairs_file": _abs_or_none(verification_file),  # key kept: earlier preparations stay valid
        "splits": splits,
        "split_ratio": list(split_ratio),
        "seg_dur": seg_dur,
        "split_speaker": split_speaker,
        "random_segment": random_segment,
        "check_audio": check_audio,
        "seed": seed,
    }
    fingerprint = _fingerprint(utterances, verification_file)
    previous = _previous_summary(save_folder, options, fingerprint, splits, verbose)
    if previous is not None:
        return previous

    excluded = _trial_speakers(trials, index)
    pool = []
    if {"train", "dev"} & set(splits):
        pool = [u for u in utterances if u.speaker not in excluded]
    tested = _trial_utterances(trials, index) if "test" in splits else []
    infos = _inspect_all(pool + tested, check_audio, n_jobs)
    usable = [u for u in pool if infos[u.path].ok]
    train, dev = _split_train_dev(usable, split_ratio, split_speaker, seed)
    report = _new_report("voxceleb", roots, save_folder, check_audio, len(utterances), infos)
    report["excluded_speakers"] = sorted(excluded)
    outputs = _training_outputs(train, dev, splits, infos, seg_dur, random_segment, report)
    if "test" in splits:
        outputs.update(_test_outputs(trials, index, infos, report, generated=False))
    return _write_outputs(save_folder, outputs, report, options, fingerprint, verbose)



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
    splits, split_ratio, seg_dur, check_audio, n_jobs, seed
        As for :func:`prepare_voxceleb`.
    extensions : sequence of str
        Audio file extensions to collect (case-insensitive).
    verbose : bool
        Print the summary.

    Returns
    -------
    dict
        The summary (also in ``prepare_report.json``) with ``skipped``.

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
    """
    splits = _check_common_options(splits, split_ratio, seg_dur, check_audio, n_jobs)
    _check_folder_options(
        verification_file, test_speakers, n_test_speakers, n_trials,
        min_utts_train, min_utts_test, splits,
    )
    roots = _data_folders(data_folder)
    if len(roots) != 1:
        raise ValueError(f"prepare_folder_corpus: give one data folder, got {roots}")
    extensions = sorted({"." + ext.lower().lstrip(".") for ext in extensions})
    utterances = _scan_folder(roots[0], extensions)
    index = _index(utterances)
    trials = None
    if verification_file is not None:
        trials = read_trial_list(
            verification_file, resolve=index.__contains__, where=roots[0]
        )
    listed = None
    if test_speakers is not None:
        listed = _read_speaker_list(test_speakers, {u.speaker for u in utterances})
    options = {
        "corpus": "folder",
        "data_folder": roots,
        "verification_pairs_file": _abs_or_none(verification_file),  # key kept: earlier preparations stay valid
        "test_speakers": listed,
        "n_test_speakers": n_test_speakers,
        "n_trials": n_trials,
        "min_utts_train": min_utts_train,
        "min_utts_test": min_utts_test,
        "splits": splits,
        "split_ratio": list(split_ratio),
        "seg_dur": seg_dur,
        "check_audio": check_audio,
        "seed": seed,
        "extensions": extensions,
    }
    fingerprint = _fingerprint(utterances, verification_file)
    previous = _previous_summary(save_folder, options, fingerprint, splits, verbose)
    if previous is not None:
        return previous

    infos = _inspect_all(utterances, check_audio, n_jobs)
    usable = defaultdict(list)
    for utt in utterances:
        if infos[utt.path].ok:
            usable[utt.speaker].append(utt)
    report = _new_report("folder", roots, save_folder, check_audio, len(utterances), infos)
    dropped = {}
    test_set = set()
    if listed is not None or n_test_speakers is not None or trials is not None:
        test_set = _choose_test_speakers(
            listed, n_test_speakers, trials, index, usable, min_utts_test, seed, dropped
        )
    excluded = test_set | set(listed or ()) | _trial_speakers(trials, index)
    training = []
    for speaker in sorted({u.speaker for u in utterances} - excluded):
        count = len(usable[speaker])
        if count < min_utts_train:
            dropped[speaker] = f"{count} usable files < min_utts_train={min_utts_train}"
        else:
            training.extend(usable[speaker])
    train, dev = _split_train_dev(training, split_ratio, False, seed)
    report["test_speakers"] = sorted(test_set)
    report["dropped_speakers"] = dropped
    outputs = _training_outputs(train, dev, splits, infos, seg_dur, False, report)
    if "test" in splits:
        generated = trials is None
        if generated:
            pool = [u for speaker in sorted(test_set) for u in usable[speaker]]
            trials = generate_trials(pool, n_trials=n_trials, seed=seed)
        outputs.update(_test_outputs(trials, index, infos, report, generated))
    return _write_outputs(save_folder, outputs, report, options, fingerprint, verbose)


def chunk_bounds(num_samples, chunk_samples, min_last_samples):
    """Training chunk bounds ``[(start, stop), ...]`` for a file of ``num_samples``.

    Full chunks from the start; the remainder becomes a last chunk when it has at
    least ``min_last_samples``; a file no longer than one chunk is one chunk.

    Example
    -------
    >>> chunk_bounds(7, 3, 2), chunk_bounds(6, 3, 2), chunk_bounds(8, 3, 2), chunk_bounds(2, 3, 2)
    ([(0, 3), (3, 6)], [(0, 3), (3, 6)], [(0, 3), (3, 6), (6, 8)], [(0, 2)])
    """
    if num_samples <= chunk_samples:
        return [(0, num_samples)]
    bounds = [
        (start, start + chunk_samples)
        for start in range(0, num_samples - chunk_samples + 1, chunk_samples)
    ]
    end = bounds[-1][1]
    if num_samples - end >= min_last_samples:
        bounds.append((end, num_samples))
    return bounds


def format_summary(summary):
    """The human-readable summary that preparation prints.

    Example
    -------
    >>> print(format_summary({"corpus": "folder", "files_found": 3, "files_checked": 3,
    ...     "check_audio": "full", "problems": [{"path": "/c/a/x.wav", "action": "skipped",
    ...     "reasons": ["silent: peak amplitude 0 < 0.0001"]}], "save_folder": "/s"}))
    folder corpus: 3 audio files found, 3 checked (check_audio=full)
      problems: 1 skipped, 0 converted, 0 kept with warning
        skipped: /c/a/x.wav: silent: peak amplitude 0 < 0.0001
      report: /s/prepare_report.json
    """
    lines = [
        f"{summary['corpus']} corpus: {summary['files_found']} audio files found, "
        f"{summary['files_checked']} checked (check_audio={summary['check_audio']})"
    ]
    for name in ("train", "dev"):
        if name in summary:
            part = summary[name]
            lines.append(
                f"  {name}.csv: {part['rows']} rows from {part['utterances']} files of "
                f"{part['speakers']} speakers ({part['shorter_than_seg_dur']} files shorter "
                f"than seg_dur, kept whole)"
            )
    if "trials" in summary:
        trials = summary["trials"]
        origin = "generated" if trials["generated"] else "from the given list"
        lines.append(
            f"  enrol.csv: {summary['enrol']['rows']} rows, test.csv: {summary['test']['rows']} "
            f"rows, trials.txt: {trials['n']} trials {origin} ({trials['target']} target, "
            f"{trials['nontarget']} non-target, {len(trials['dropped'])} dropped)"
        )
    for speaker, reason in sorted(summary.get("dropped_speakers", {}).items()):
        lines.append(f"  speaker {speaker} dropped: {reason}")
    lines.extend(_problem_lines(summary["problems"]))
    lines.append(f"  report: {os.path.join(summary['save_folder'], REPORT_FILE)}")
    return "\n".join(lines)


def _problem_lines(problems):
    actions = ("skipped", "converted", "kept with warning")
    counts = {action: sum(p["action"] == action for p in problems) for action in actions}
    lines = ["  problems: " + ", ".join(f"{counts[a]} {a}" for a in actions)]
    for action in actions:
        listed = [p for p in problems if p["action"] == action]
        for problem in listed[:MAX_LISTED]:
            lines.append(f"    {action}: {problem['path']}: {'; '.join(problem['reasons'])}")
        if len(listed) > MAX_LISTED:
            lines.append(f"    ... {len(listed) - MAX_LISTED} more {action} (see the report)")
    return lines


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
    trial_file, test_speakers, n_test_speakers, n_trials, min_utts_train, min_utts_test, splits
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
        return _trial_speakers(trials, index) | set(listed or ())
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


# ----------------------------------------------------------------------------- scanning


def _walk(folder, max_depth, prefix=()):
    """Yields ``(parts, DirEntry)`` of the files at most ``max_depth`` levels down."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        logger.warning("cannot list %s: %s", folder, err)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        parts = prefix + (entry.name,)
        if entry.is_dir():
            if len(parts) < max_depth:
                yield from _walk(entry.path, max_depth, parts)
        elif entry.is_file():
            yield parts, entry


def _scan(base, depths, extensions, root=0):
    """Audio files ``depths`` levels below ``base``; also m4a files with no converted twin."""
    found, unsupported = [], []
    for parts, entry in _walk(base, max(depths)):
        if len(parts) not in depths:
            continue
        stem, ext = os.path.splitext(parts[-1])
        key = parts[:-1] + (stem,)
        if ext.lower() in extensions:
            found.append(Utterance(key, "/".join(parts), entry.path, entry.stat().st_size, root))
        elif is_unsupported(entry.name):
            unsupported.append((key, entry.path))
    converted = {u.parts for u in found}
    return found, [path for key, path in unsupported if key not in converted]


def _scan_voxceleb(roots):
    utterances, unsupported, bases = [], [], []
    for number, root in enumerate(roots):
        base = os.path.join(root, "wav")
        if os.path.isdir(base):
            found, m4a = _scan(base, (3,), (".wav",), number)
        elif os.path.isdir(os.path.join(root, "aac")):
            base = os.path.join(root, "aac")
            found, m4a = _scan(base, (3,), (), number)
        else:
            raise FileNotFoundError(
                f"{root}: no 'wav' folder; expected {root}/wav/idNNNNN/<video>/<utt>.wav"
            )
        utterances.extend(found)
        unsupported.extend(m4a)
        bases += [base] if m4a else []
    if unsupported:
        raise ValueError(_unsupported_message(unsupported, bases))
    if not utterances:
        raise FileNotFoundError(f"no .wav files in {[os.path.join(r, 'wav') for r in roots]}")
    _check_unique(utterances)
    return utterances


def _scan_folder(root, extensions):
    utterances, unsupported = _scan(root, (2, 3), extensions)
    if unsupported:
        raise ValueError(_unsupported_message(unsupported, [root]))
    if not utterances:
        raise FileNotFoundError(
            f"no audio files with extensions {extensions} in {root}/<speaker>/[<session>/]"
        )
    _check_unique(utterances)
    return utterances


def _unsupported_message(paths, folders):
    """One error for all m4a files: count, an example, the ffmpeg commands."""
    example = paths[0]
    lines = [
        f"found {len(paths)} m4a/aac/mp4 files that soundfile cannot read, e.g. {example}.",
        "Convert them to 16 kHz mono WAV next to the originals; one file:",
        "  " + conversion_hint(example).split("e.g. ", 1)[1],
        "a whole folder:",
    ]
    for folder in folders:
        lines.append(
            f"  find {folder} -name '*.m4a' -exec sh -c "
            "'ffmpeg -nostdin -loglevel error -i \"$1\" -ac 1 -ar 16000 \"${1%.m4a}.wav\"' _ {} \\;"
        )
    if any(os.path.basename(folder) == "aac" for folder in folders):
        lines.append(
            "VoxCeleb2 ships <root>/aac/: prepare_voxceleb reads <root>/wav/, so rename the "
            "converted folder (mv <root>/aac <root>/wav) or link it."
        )
    return "\n".join(lines)


def _check_unique(utterances):
    seen = defaultdict(list)
    for utt in utterances:
        seen[utt.parts].append(utt.path)
    clashes = [paths for paths in seen.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(", ".join(paths) for paths in clashes[:5])
        raise ValueError(
            f"{len(clashes)} utterance id(s) are given by more than one file (keep one "
            f"of each): {shown}"
        )


def _index(utterances):
    return {u.rel: u for u in utterances}


def _trial_speakers(trials, index):
    return {index[rel].speaker for trial in trials or () for rel in (trial.enrol, trial.test)}


def _trial_utterances(trials, index):
    rels = dict.fromkeys(rel for trial in trials or () for rel in (trial.enrol, trial.test))
    return [index[rel] for rel in rels]


def _unpack_vox1_test(source, root):
    if not os.path.isdir(os.path.join(root, "wav", "id10270")):
        archive = os.path.join(source, VOX1_TEST_ZIP)
        if not os.path.isfile(archive):
            raise FileNotFoundError(f"source: {archive} does not exist")
        logger.info("extracting %s to %s", archive, root)
        shutil.unpack_archive(archive, root)
    meta = os.path.join(source, "meta")
    if os.path.isdir(meta) and not os.path.exists(os.path.join(root, "meta")):
        shutil.copytree(meta, os.path.join(root, "meta"))


# ------------------------------------------------------------------- idempotence, checks


def _fingerprint(utterances, trial_file):
    digest = hashlib.sha256()
    for utt in sorted(utterances, key=lambda u: (u.root, u.rel)):
        digest.update(f"{utt.root}\t{utt.rel}\t{utt.size}\n".encode())
    if trial_file is not None:
        digest.update(b"trial list\n")
        with open(trial_file, "rb") as handle:
            digest.update(handle.read())
    return {"n_files": len(utterances), "sha256": digest.hexdigest()}


def _output_names(splits):
    names = {
        "train": ["train.csv"],
        "dev": ["dev.csv"],
        "test": ["enrol.csv", "test.csv", TRIALS_FILE],
    }
    return [name for split in splits for name in names[split]]


def _stored_state(options, fingerprint):
    state = {"format_version": FORMAT_VERSION, "options": options, "fingerprint": fingerprint}
    return json.loads(json.dumps(state))


def _previous_summary(save_folder, options, fingerprint, splits, verbose=True):
    """The previous run's summary if it used these options and files, else None."""
    try:
        with open(os.path.join(save_folder, OPTIONS_FILE), encoding="utf-8") as handle:
            stored = json.load(handle)
        with open(os.path.join(save_folder, REPORT_FILE), encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, ValueError):
        return None
    if stored != _stored_state(options, fingerprint):
        return None
    if not all(os.path.isfile(os.path.join(save_folder, n)) for n in _output_names(splits)):
        return None
    if verbose:
        print(f"{save_folder}: already prepared with the same options and files; nothing to do")
    summary["skipped"] = True
    return summary


def _inspect_job(job):
    path, mode = job
    try:
        info = inspect_audio(path, full=mode == "full")
    except Exception as err:  # the policy says skip, whatever went wrong
        return AudioInfo(path, False, "skip", [f"inspection failed: {err}"])
    if mode != "none":
        return info
    usable = bool(info.frames)
    return AudioInfo(
        path, usable, "keep" if usable else "skip", [] if usable else info.reasons or ["empty"],
        info.sample_rate, info.channels, info.frames, info.duration,
    )


def _inspect_all(utterances, mode, n_jobs):
    """AudioInfo of every file, keyed by path (in parallel when ``n_jobs > 1``)."""
    jobs = [(path, mode) for path in dict.fromkeys(u.path for u in utterances)]
    if int(n_jobs) > 1 and len(jobs) > 1:
        chunksize = max(1, len(jobs) // (8 * int(n_jobs)))
        with ProcessPoolExecutor(max_workers=int(n_jobs)) as pool:
            infos = list(pool.map(_inspect_job, jobs, chunksize=chunksize))
    else:
        infos = [_inspect_job(job) for job in jobs]
    return {info.path: info for info in infos}


def _action_label(info):
    return {"skip": "skipped", "convert": "converted"}.get(info.action, "kept with warning")


def _new_report(corpus, roots, save_folder, check_audio, n_found, infos):
    problems = [
        {"path": info.path, "action": _action_label(info), "reasons": info.reasons}
        for info in sorted(infos.values(), key=lambda i: i.path)
        if info.reasons
    ]
    return {
        "corpus": corpus,
        "data_folder": roots,
        "save_folder": os.path.abspath(save_folder),
        "check_audio": check_audio,
        "files_found": n_found,
        "files_checked": len(infos),
        "n_skipped": sum(p["action"] == "skipped" for p in problems),
        "n_converted": sum(p["action"] == "converted" for p in problems),
        "n_kept_with_warning": sum(p["action"] == "kept with warning" for p in problems),
        "problems": problems,
    }


# ------------------------------------------------------------------------------ rows


def _split_train_dev(utterances, split_ratio, split_speaker, seed):
    rng = random.Random(f"{seed}:split")
    dev_fraction = split_ratio[1] / (split_ratio[0] + split_ratio[1])
    by_speaker = defaultdict(list)
    for utt in sorted(utterances, key=lambda u: u.rel):
        by_speaker[utt.speaker].append(utt)
    speakers = sorted(by_speaker)
    train, dev = [], []
    if split_speaker:
        rng.shuffle(speakers)
        n_dev = int(len(speakers) * dev_fraction + 0.5)
        for number, speaker in enumerate(speakers):
            (dev if number < n_dev else train).extend(by_speaker[speaker])
        return train, dev
    for speaker in speakers:
        files = by_speaker[speaker]
        rng.shuffle(files)
        n_dev = min(len(files) - 1, int(len(files) * dev_fraction + 0.5))
        dev.extend(files[:n_dev])
        train.extend(files[n_dev:])
    return train, dev


def _num_samples(info):
    return resampled_length(info.frames, info.sample_rate, SAMPLE_RATE)


def _chunk_rows(utterances, infos, seg_dur, random_segment):
    chunk = int(round(seg_dur * SAMPLE_RATE))
    min_last = int(round(MIN_LAST_CHUNK_SECONDS * SAMPLE_RATE))
    rows, short = [], 0
    for utt in sorted(utterances, key=lambda u: u.uid):
        total = _num_samples(infos[utt.path])
        short += total < chunk
        if random_segment:
            rows.append([utt.uid, total / SAMPLE_RATE, utt.path, 0, total, utt.speaker])
            continue
        for start, stop in chunk_bounds(total, chunk, min_last):
            chunk_id = f"{utt.uid}_{start}_{stop}"
            rows.append([chunk_id, total / SAMPLE_RATE, utt.path, start, stop, utt.speaker])
    return rows, short


def _training_outputs(train, dev, splits, infos, seg_dur, random_segment, report):
    outputs = {}
    for name, utterances in (("train", train), ("dev", dev)):
        if name not in splits:
            continue
        rows, short = _chunk_rows(utterances, infos, seg_dur, random_segment)
        report[name] = {
            "rows": len(rows),
            "utterances": len(utterances),
            "speakers": len({u.speaker for u in utterances}),
            "shorter_than_seg_dur": short,
        }
        outputs[f"{name}.csv"] = rows
    return outputs


def _whole_rows(rels, index, infos):
    rows = []
    for rel in sorted(rels, key=lambda r: index[r].trial_id):
        utt = index[rel]
        total = _num_samples(infos[utt.path])
        rows.append([utt.trial_id, total / SAMPLE_RATE, utt.path, 0, total, utt.speaker])
    return rows


def _test_outputs(trials, index, infos, report, generated):
    """enrol.csv, test.csv and trials.txt; drops trials whose files were skipped."""
    kept, dropped = [], []
    for trial in trials:
        bad = [rel for rel in (trial.enrol, trial.test) if not infos[index[rel].path].ok]
        if bad:
            dropped.append(
                {"line": trial.line, "trial": f"{trial.label} {trial.enrol} {trial.test}",
                 "reason": f"skipped by the audio check: {', '.join(bad)}"}
            )
        else:
            kept.append(trial)
    if dropped:
        logger.warning("%d trials use files the audio check skipped; dropped", len(dropped))
    enrol_rows = _whole_rows(dict.fromkeys(t.enrol for t in kept), index, infos)
    test_rows = _whole_rows(dict.fromkeys(t.test for t in kept), index, infos)
    report["enrol"] = {"rows": len(enrol_rows)}
    report["test"] = {"rows": len(test_rows)}
    report["trials"] = {
        "file": os.path.join(report["save_folder"], TRIALS_FILE),
        "generated": generated,
        "n": len(kept),
        "target": sum(t.label == 1 for t in kept),
        "nontarget": sum(t.label == 0 for t in kept),
        "dropped": dropped,
    }
    text = "".join(f"{t.label} {t.enrol} {t.test}\n" for t in kept)
    return {"enrol.csv": enrol_rows, "test.csv": test_rows, TRIALS_FILE: text}


def _write_outputs(save_folder, outputs, report, options, fingerprint, verbose=True):
    """Writes every output atomically; the options file goes last."""
    os.makedirs(save_folder, exist_ok=True)
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    if os.path.exists(options_path):
        os.remove(options_path)
    report["outputs"] = [os.path.join(report["save_folder"], name) for name in outputs]
    for name, content in outputs.items():
        path = os.path.join(save_folder, name)
        if name.endswith(".csv"):
            atomic_write_csv(path, content, CSV_FIELDS)
        else:
            atomic_write_text(path, content)
    atomic_write_json(os.path.join(save_folder, REPORT_FILE), report)
    atomic_write_json(options_path, _stored_state(options, fingerprint))
    if verbose:
        print(format_summary(report))
    return dict(report, skipped=False)


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
