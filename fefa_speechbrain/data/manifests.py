"""Writing a preparation's outputs (CSV manifests, trial list, report, options) and
knowing when an earlier preparation is still up to date.
"""

import hashlib
import json
import logging
import os
import random
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from fefa_speechbrain.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from fefa_speechbrain.data.audio import AudioInfo, inspect_audio, resampled_length
from fefa_speechbrain.data.trials import format_trial_line

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CSV_FIELDS = ["ID", "duration", "wav", "start", "stop", "spk_id"]
OPTIONS_FILE = "prepare_options.json"
REPORT_FILE = "prepare_report.json"
TRIALS_FILE = "trials.txt"
THRESHOLD_TRIALS_FILE = "threshold_trials.txt"  # trials of speakers held out for thresholds
MIN_LAST_CHUNK_SECONDS = 1.0
FORMAT_VERSION = 1
MAX_LISTED = 20


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


def problem_lines(problems):
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
    if "threshold_trials" in summary:
        held = summary["threshold_trials"]
        lines.append(
            f"  {THRESHOLD_TRIALS_FILE}: {held['n']} trials ({held['target']} target, "
            f"{held['nontarget']} non-target) of {held['speakers']} threshold speakers, "
            "left out of train.csv and dev.csv"
        )
    for speaker, reason in sorted(summary.get("dropped_speakers", {}).items()):
        lines.append(f"  speaker {speaker} dropped: {reason}")
    lines.extend(problem_lines(summary["problems"]))
    lines.append(f"  report: {os.path.join(summary['save_folder'], REPORT_FILE)}")
    return "\n".join(lines)




def input_fingerprint(utterances, trial_file):
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


def previous_summary(save_folder, options, fingerprint, splits, verbose=True):
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
    names = _output_names(splits)
    if options.get("n_threshold_speakers"):
        names.append(THRESHOLD_TRIALS_FILE)
    if not all(os.path.isfile(os.path.join(save_folder, n)) for n in names):
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


def inspect_all(utterances, mode, n_jobs):
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


def new_report(corpus, roots, save_folder, check_audio, n_found, infos):
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


def split_train_dev(utterances, split_ratio, split_speaker, seed):
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


def training_outputs(train, dev, splits, infos, seg_dur, random_segment, report):
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


def test_outputs(trials, index, infos, report, generated):
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
    text = "".join(format_trial_line(t) for t in kept)
    return {"enrol.csv": enrol_rows, "test.csv": test_rows, TRIALS_FILE: text}


def write_outputs(save_folder, outputs, report, options, fingerprint, verbose=True):
    """Writes every output atomically; the options file goes last.

    A ``threshold_trials.txt`` of an earlier preparation is removed when this one writes
    none: its speakers may be training speakers now.
    """
    os.makedirs(save_folder, exist_ok=True)
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    if os.path.exists(options_path):
        os.remove(options_path)
    stale = os.path.join(save_folder, THRESHOLD_TRIALS_FILE)
    if THRESHOLD_TRIALS_FILE not in outputs and os.path.isfile(stale):
        os.remove(stale)
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


