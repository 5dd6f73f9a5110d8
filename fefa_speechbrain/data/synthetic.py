"""A deterministic synthetic speaker corpus in the VoxCeleb layout (the built-in demo data).

The corpus lets the whole VoxCeleb code path (preparation, training, verification) run
where VoxCeleb is not available. It is written exactly like VoxCeleb1::

Details: ``docs/reference.md`` (fefa_speechbrain.data.synthetic).
"""

import argparse
import contextlib
import functools
import itertools
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf
from tqdm import tqdm

from fefa_speechbrain.atomic import atomic_open, atomic_write_json, atomic_write_text
from fefa_speechbrain.data.synthetic_speech import (
    FIRST_SPEAKER_NUMBER,
    TRIALS_STREAM,
    UTTERANCE_STREAM,
    draw_session,
    draw_voice,
    speaker_id,
    synthesize_utterance,
)

GENERATOR_VERSION = 2
CORPUS_DEFAULTS = {
    "n_speakers": 40,
    "n_test_speakers": 10,
    "sessions_per_speaker": 3,
    "utts_per_session": 4,
    "min_duration": 2.0,
    "max_duration": 5.0,
    "sample_rate": 16000,
    "seed": 0,
    "n_trials": None,
    "trials_name": "veri_test2.txt",
}
MANIFEST_NAME = "synthetic_manifest.json"
PENDING_NAME = ".synthetic_pending.json"
def _pcm16(wav):
    """Float waveform in [-1, 1] to 16-bit integers (rounded, never wrapped)."""
    return np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16)


def _write_wav(path, wav, sample_rate):
    """Writes a 16-bit PCM WAV atomically."""
    with atomic_open(path, "wb") as handle:
        sf.write(handle, _pcm16(wav), sample_rate, subtype="PCM_16", format="WAV")


def _check_int(name, value, minimum):
    """Raises ValueError unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _validated_config(config):
    """The arguments of :func:`generate_corpus` checked (a ValueError names the culprit)
    and converted to plain JSON types, with the generator version."""
    _check_int("n_speakers", config["n_speakers"], 3)
    _check_int("n_test_speakers", config["n_test_speakers"], 2)
    if config["n_test_speakers"] >= config["n_speakers"]:
        raise ValueError(
            f"n_test_speakers={config['n_test_speakers']} must be smaller than "
            f"n_speakers={config['n_speakers']} so that some speakers are left for training"
        )
    if config["n_speakers"] > 99999 - FIRST_SPEAKER_NUMBER + 1:
        raise ValueError(f"n_speakers={config['n_speakers']} does not fit 5-digit VoxCeleb ids")
    _check_int("sessions_per_speaker", config["sessions_per_speaker"], 1)
    _check_int("utts_per_session", config["utts_per_session"], 1)
    if config["sessions_per_speaker"] * config["utts_per_session"] < 2:
        raise ValueError(
            "sessions_per_speaker * utts_per_session must be at least 2 (a target trial "
            "needs two utterances of a speaker)"
        )
    _check_int("sample_rate", config["sample_rate"], 8000)
    _check_int("seed", config["seed"], 0)
    low, high = config["min_duration"], config["max_duration"]
    numbers = all(isinstance(v, (int, float, np.number)) for v in (low, high))
    if not numbers or isinstance(low, bool) or isinstance(high, bool) or not 0.1 <= low <= high:
        raise ValueError(
            f"durations must satisfy 0.1 <= min_duration <= max_duration, got "
            f"min_duration={low!r}, max_duration={high!r}"
        )
    if config["n_trials"] is not None:
        _check_int("n_trials", config["n_trials"], 2)
    name = config["trials_name"]
    if not name or os.path.basename(name) != name or name in ("wav", MANIFEST_NAME, PENDING_NAME):
        raise ValueError(f"trials_name={name!r} must be a plain file name (e.g. veri_test2.txt)")
    counts = ("n_speakers", "n_test_speakers", "sessions_per_speaker", "utts_per_session")
    return {
        "generator_version": GENERATOR_VERSION,
        **{key: int(config[key]) for key in counts},
        "min_duration": float(low),
        "max_duration": float(high),
        "sample_rate": int(config["sample_rate"]),
        "seed": int(config["seed"]),
        "n_trials": None if config["n_trials"] is None else int(config["n_trials"]),
        "trials_name": name,
    }


def _choose(rng, items, count):
    """``count`` items drawn without replacement, kept in their original order."""
    picked = np.sort(rng.choice(len(items), size=count, replace=False))
    return [items[i] for i in picked]


def _non_target_pairs(rng, speakers, count, available):
    """``count`` distinct index pairs (i < j) of utterances of different speakers."""
    if 2 * count >= available:
        first, second = np.triu_indices(len(speakers), 1)
        keep = speakers[first] != speakers[second]
        pairs = list(zip(first[keep].tolist(), second[keep].tolist()))
        return _choose(rng, pairs, count)
    chosen = set()
    while len(chosen) < count:
        draws = rng.integers(0, len(speakers), (2, 2 * count))
        for i, j in draws.T.tolist():
            if speakers[i] != speakers[j] and len(chosen) < count:
                chosen.add((min(i, j), max(i, j)))
    return sorted(chosen)


def plan_trials(utterances, n_trials=None, seed=0):
    """A balanced trial list over ``utterances`` of the test speakers.

    Target pairs join utterances of different sessions of a speaker; same-session pairs
    are used only when more targets are asked for than cross-session pairs exist (or the
    speakers have a single session). Non-target pairs are drawn from all pairs of
    utterances of different speakers.

    Arguments
    ---------
    utterances : list of (speaker, session, path) tuples
        The test utterances.
    n_trials : int or None
        Number of trials (``n_trials // 2`` targets). None: every cross-session target
        pair and as many non-targets.
    seed : int
        Seeds the choice of pairs.

    Returns
    -------
    list of (label, enrol_path, test_path), sorted by enrol then test path.

    Example
    -------
    >>> utts = [("a", "s1", "a/1"), ("a", "s2", "a/2"), ("b", "s1", "b/1"), ("b", "s2", "b/2")]
    >>> plan_trials(utts)
    [(1, 'a/1', 'a/2'), (0, 'a/2', 'b/1'), (0, 'a/2', 'b/2'), (1, 'b/1', 'b/2')]
    """
    rng = np.random.default_rng([seed, TRIALS_STREAM])
    speakers = np.array([spk for spk, _, _ in utterances])
    members = {}
    for index, (spk, _, _) in enumerate(utterances):
        members.setdefault(spk, []).append(index)
    cross, same = [], []
    for indices in members.values():
        for a, b in itertools.combinations(indices, 2):
            (cross if utterances[a][1] != utterances[b][1] else same).append((a, b))
    n_pairs = len(utterances) * (len(utterances) - 1) // 2
    available = n_pairs - len(cross) - len(same)
    if n_trials is None:
        n_target = len(cross) or len(same)
        n_non_target = n_target
    else:
        n_target, n_non_target = n_trials // 2, n_trials - n_trials // 2
        if n_target > len(cross) + len(same) or n_non_target > available:
            raise ValueError(
                f"n_trials={n_trials} is too many for this corpus: at most "
                f"{len(cross) + len(same)} target and {available} non-target pairs exist"
            )
    if n_target <= len(cross):
        targets = _choose(rng, cross, n_target)
    else:
        targets = cross + _choose(rng, same, n_target - len(cross))
    non_targets = _non_target_pairs(rng, speakers, n_non_target, available)
    trials = [(1, a, b) for a, b in targets] + [(0, a, b) for a, b in non_targets]
    trials = [(label, utterances[a][2], utterances[b][2]) for label, a, b in trials]
    return sorted(trials, key=lambda trial: (trial[1], trial[2]))


def _utterance_path(speaker_index, session, utt_index):
    """Path of an utterance relative to ``wav/``, e.g. ``id10001/<session>/00001.wav``."""
    return f"{speaker_id(speaker_index)}/{session.session_id}/{utt_index + 1:05d}.wav"


def _plan_corpus(config):
    """The utterance list ``(speaker index, session index, path relative to wav/)``."""
    utterances = []
    for s in range(config["n_speakers"]):
        for k in range(config["sessions_per_speaker"]):
            session = draw_session(config["seed"], s, k, config["sample_rate"])
            for u in range(config["utts_per_session"]):
                utterances.append((s, k, _utterance_path(s, session, u)))
    return utterances


def _write_speaker(out_dir, config, speaker_index):
    """Synthesizes and writes every utterance of one speaker; returns the samples written."""
    seed, sample_rate = config["seed"], config["sample_rate"]
    voice = draw_voice(seed, speaker_index)
    samples = 0
    for k in range(config["sessions_per_speaker"]):
        session = draw_session(seed, speaker_index, k, sample_rate)
        for u in range(config["utts_per_session"]):
            rng = np.random.default_rng([seed, UTTERANCE_STREAM, speaker_index, k, u])
            duration = rng.uniform(config["min_duration"], config["max_duration"])
            n_samples = int(round(duration * sample_rate))
            wav = synthesize_utterance(voice, session, rng, n_samples, sample_rate)
            path = os.path.join(out_dir, "wav", _utterance_path(speaker_index, session, u))
            _write_wav(path, wav, sample_rate)
            samples += n_samples
    return samples


def _write_all_speakers(out_dir, config, n_jobs, progress):
    """Runs :func:`_write_speaker` for every speaker (in ``n_jobs`` processes if > 1).

    Returns the total number of samples written.
    """
    write = functools.partial(_write_speaker, out_dir, config)
    speakers = range(config["n_speakers"])
    samples = 0
    bar = tqdm(total=len(speakers), desc="Synthetic corpus", unit="spk", disable=not progress)
    with contextlib.ExitStack() as stack:
        mapper = map
        if n_jobs > 1:
            context = multiprocessing.get_context("spawn")
            mapper = stack.enter_context(ProcessPoolExecutor(n_jobs, mp_context=context)).map
        for written in mapper(write, speakers):
            samples += written
            bar.update(1)
    bar.close()
    return samples


def _speaker_table(seed, n_speakers, n_test):
    """Per-speaker metadata kept in the manifest (rounded, for readability)."""
    voices = [draw_voice(seed, s) for s in range(n_speakers)]
    first_test = n_speakers - n_test
    return [
        {
            "id": speaker_id(s),
            "split": "test" if s >= first_test else "train",
            "sex": "f" if voice.female else "m",
            "f0_hz": round(voice.f0_hz, 1),
            "formant_scale": round(voice.formant_scale, 3),
        }
        for s, voice in enumerate(voices)
    ]


def _owned_path(out_dir, relative):
    """Absolute path of a corpus file named in a manifest, or None if it is not one of ours.

    Only ``wav/**.wav`` inside ``out_dir`` and plain names in ``out_dir`` qualify, so a
    damaged manifest can never make the generator delete anything else.
    """
    if not isinstance(relative, str) or os.path.isabs(relative):
        return None
    root = os.path.realpath(out_dir)
    path = os.path.realpath(os.path.join(root, relative))
    inside_wav = path.startswith(os.path.join(root, "wav") + os.sep) and path.endswith(".wav")
    plain = os.path.dirname(path) == root and os.path.basename(path) not in (
        MANIFEST_NAME,
        PENDING_NAME,
    )
    return path if inside_wav or plain else None


def _read_json(path):
    """The JSON object in ``path``, or None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as fin:
            content = json.load(fin)
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _listed_files(record):
    """The corpus files (relative to the corpus folder) that a manifest names."""
    if record is None:
        return set()
    names = record.get("files", [])
    trials = record.get("trials")
    return set(names if isinstance(names, list) else []) | ({trials} if trials else set())


def _remove_files(out_dir, relatives):
    """Deletes the given corpus files and the folders under wav/ they leave empty."""
    wav_root = os.path.realpath(os.path.join(out_dir, "wav"))
    for relative in sorted(relatives):
        path = _owned_path(out_dir, relative)
        if path is None or not os.path.isfile(path):
            continue
        os.remove(path)
        folder = os.path.dirname(path)
        while folder.startswith(wav_root + os.sep) and not os.listdir(folder):
            os.rmdir(folder)
            folder = os.path.dirname(folder)


def _is_complete(out_dir, manifest, config):
    """True when ``manifest`` is a complete one for ``config`` and all its files exist."""
    keys = ("speakers", "n_sessions", "n_trials", "n_target_trials", "seconds", "trials")
    if manifest is None or manifest.get("config") != config or not all(k in manifest for k in keys):
        return False
    files = _listed_files(manifest)
    return len(files) > 1 and all(os.path.isfile(os.path.join(out_dir, f)) for f in files)


def _summary(out_dir, manifest, generated):
    """The dictionary :func:`generate_corpus` returns."""
    out_dir = os.path.abspath(out_dir)
    speakers = manifest["speakers"]
    return {
        "out_dir": out_dir,
        "wav_dir": os.path.join(out_dir, "wav"),
        "trials_path": os.path.join(out_dir, manifest["trials"]),
        "manifest_path": os.path.join(out_dir, MANIFEST_NAME),
        "generated": generated,
        "n_speakers": len(speakers),
        "n_train_speakers": sum(s["split"] == "train" for s in speakers),
        "n_test_speakers": sum(s["split"] == "test" for s in speakers),
        "test_speakers": [s["id"] for s in speakers if s["split"] == "test"],
        "n_sessions": manifest["n_sessions"],
        "n_utterances": len(manifest["files"]),
        "n_trials": manifest["n_trials"],
        "n_target_trials": manifest["n_target_trials"],
        "seconds": manifest["seconds"],
    }


def generate_corpus(out_dir, progress=True, n_jobs=1, **options):
    """Writes (or finds up to date) the synthetic corpus in ``out_dir``.

    Arguments
    ---------
    out_dir : str
        Corpus folder; gets ``wav/``, the trial list and the manifest.
    progress : bool
        Show a progress bar on stderr.
    n_jobs : int
        Worker processes (the result does not depend on it).
    **options
        The corpus, defaults in ``CORPUS_DEFAULTS``:
        n_speakers : int
            Number of speakers (id10001 ...).
        n_test_speakers : int
            The last ``n_test_speakers`` speakers form the trial list.
        sessions_per_speaker : int
            Sessions ("videos") per speaker, each with its own channel.
        utts_per_session : int
            Utterances per session.
        min_duration, max_duration : float
            Utterance durations are uniform in this range (seconds).
        sample_rate : int
            Sampling rate of the WAV files.
        seed : int
            Seeds everything (non-negative).
        n_trials : int or None
            Size of the trial list; None: every cross-session target pair of the test
            speakers and as many non-target pairs.
        trials_name : str
            File name of the trial list.

    Returns
    -------
    dict
        ``out_dir, wav_dir, trials_path, manifest_path, generated`` (False when the
        corpus was already there), ``n_speakers, n_train_speakers, n_test_speakers,
        test_speakers, n_sessions, n_utterances, n_trials, n_target_trials, seconds``.

    Example
    -------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> summary = generate_corpus(out, n_speakers=3, n_test_speakers=2, sessions_per_speaker=1,
    ...                           utts_per_session=2, min_duration=0.3, max_duration=0.3,
    ...                           progress=False)
    >>> summary["n_utterances"], summary["test_speakers"], summary["n_trials"]
    (6, ['id10002', 'id10003'], 4)
    >>> generate_corpus(out, n_speakers=3, n_test_speakers=2, sessions_per_speaker=1,
    ...                 utts_per_session=2, min_duration=0.3, max_duration=0.3,
    ...                 progress=False)["generated"]
    False
    """
    unknown = sorted(set(options) - set(CORPUS_DEFAULTS))
    if unknown:
        raise TypeError(f"generate_corpus() got unknown options {unknown}")
    config = _validated_config({**CORPUS_DEFAULTS, **options})
    trials_name = config["trials_name"]
    _check_int("n_jobs", n_jobs, 1)
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    previous = _read_json(manifest_path)
    if _is_complete(out_dir, previous, config):
        if progress:
            print(f"Synthetic corpus in {out_dir} is up to date", file=sys.stderr)
        return _summary(out_dir, previous, generated=False)

    utterances = _plan_corpus(config)
    files = [f"wav/{relative}" for *_, relative in utterances]
    n_speakers, n_test = config["n_speakers"], config["n_test_speakers"]
    test_utterances = [(s, k, path) for s, k, path in utterances if s >= n_speakers - n_test]
    trials = plan_trials(test_utterances, config["n_trials"], config["seed"])
    pending_path = os.path.join(out_dir, PENDING_NAME)
    stale = _listed_files(previous) | _listed_files(_read_json(pending_path))
    atomic_write_json(pending_path, {"files": sorted(stale | set(files)), "trials": trials_name})
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    _remove_files(out_dir, stale - set(files) - {trials_name})

    samples = _write_all_speakers(out_dir, config, n_jobs, progress)
    atomic_write_text(
        os.path.join(out_dir, trials_name),
        "".join(f"{label} {enrol} {test}\n" for label, enrol, test in trials),
    )
    manifest = {
        "config": config,
        "speakers": _speaker_table(config["seed"], n_speakers, n_test),
        "n_sessions": n_speakers * config["sessions_per_speaker"],
        "n_trials": len(trials),
        "n_target_trials": sum(label for label, _, _ in trials),
        "seconds": round(samples / config["sample_rate"], 3),
        "trials": trials_name,
        "files": files,
    }
    atomic_write_json(manifest_path, manifest)
    os.remove(pending_path)
    return _summary(out_dir, manifest, generated=True)


def main(argv=None):
    """Command-line entry point; prints the summary as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m fefa_speechbrain.data.synthetic",
        description="Generate the synthetic VoxCeleb-layout demo corpus.",
    )
    parser.add_argument("out_dir", help="corpus folder (wav/, trial list, manifest)")
    parser.add_argument("--speakers", type=int, default=40, help="number of speakers")
    parser.add_argument("--test-speakers", type=int, default=10, help="speakers in the trial list")
    parser.add_argument("--sessions", type=int, default=3, help="sessions per speaker")
    parser.add_argument("--utts", type=int, default=4, help="utterances per session")
    parser.add_argument("--min-dur", type=float, default=2.0, help="shortest utterance, seconds")
    parser.add_argument("--max-dur", type=float, default=5.0, help="longest utterance, seconds")
    parser.add_argument("--sample-rate", type=int, default=16000, help="sampling rate, Hz")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument("--trials", type=int, default=None, help="trials (default: all targets)")
    parser.add_argument("--trials-name", default="veri_test2.txt", help="trial list file name")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = generate_corpus(
            args.out_dir,
            n_speakers=args.speakers,
            n_test_speakers=args.test_speakers,
            sessions_per_speaker=args.sessions,
            utts_per_session=args.utts,
            min_duration=args.min_dur,
            max_duration=args.max_dur,
            sample_rate=args.sample_rate,
            seed=args.seed,
            n_trials=args.trials,
            trials_name=args.trials_name,
            progress=not args.quiet,
            n_jobs=args.jobs,
        )
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
