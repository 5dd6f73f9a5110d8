"""Speaker verification: trial lists, cosine scoring, score normalization.

Trial lists are VoxCeleb's (``veri_test2.txt``): one trial per line,
``label enrol_path test_path`` with label 1 (same speaker) or 0, paths relative to the
audio root (``wav/`` of VoxCeleb1). :func:`read_trials` checks the whole list before any
embedding is computed and reports every kind of problem at once, with line numbers.

Score normalization against a cohort of training embeddings (one per training speaker,
the mean of its utterances' embeddings):

- ``s-norm``: ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`` with the mean and
  standard deviation of the enrol (test) embedding's scores against the whole cohort;
- ``as-norm``: the same statistics over the ``cohort_size`` highest cohort scores of
  each side only (adaptive s-norm).
"""

import os
from collections import namedtuple

import numpy as np
import torch

Trial = namedtuple("Trial", ["label", "enrol", "test"])

SCORE_NORMS = (None, "s-norm", "as-norm")
MAX_REPORTED_LINES = 10


class TrialListError(ValueError):
    """A trial list with malformed lines, unknown labels or missing files."""


def read_trials(path, audio_root=None, check_files=True):
    """Reads and validates a trial list.

    Arguments
    ---------
    path : str
        The trial list (``label enrol test`` per line; blank lines are ignored).
    audio_root : str
        Folder the trial paths are relative to (default: the list's folder).
    check_files : bool
        Check that every referenced file exists.

    Returns
    -------
    list of Trial with absolute paths.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("a.wav", "b.wav"):
    ...     _ = (tmp / name).write("")
    >>> _ = (tmp / "trials.txt").write("1 a.wav b.wav\\n0 b.wav a.wav\\n")
    >>> [t.label for t in read_trials(str(tmp / "trials.txt"))]
    [1, 0]
    >>> _ = (tmp / "bad.txt").write("1 a.wav\\n2 a.wav b.wav\\n0 a.wav c.wav\\n")
    >>> read_trials(str(tmp / "bad.txt"))
    Traceback (most recent call last):
    ...
    fefa_speechbrain.verification.TrialListError: ... 3 bad lines...
    """
    if not os.path.isfile(path):
        raise TrialListError(f"Trial list {path} does not exist")
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    trials, problems = [], []
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, start=1):
            fields = line.split()
            if not fields:
                continue
            problem = _trial_problem(fields)
            if problem is None:
                enrol, test = (os.path.join(root, p) for p in fields[1:])
                missing = [p for p in (enrol, test) if check_files and not os.path.isfile(p)]
                if missing:
                    problem = "missing file " + ", ".join(missing)
                else:
                    trials.append(Trial(int(fields[0]), enrol, test))
            if problem is not None:
                problems.append(f"  line {number}: {problem}: {line.strip()!r}")
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED_LINES])
        more = len(problems) - MAX_REPORTED_LINES
        raise TrialListError(
            f"Trial list {path} has {len(problems)} bad lines (expected 'label enrol test', "
            f"label 0 or 1, files under {root}):\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    if not trials:
        raise TrialListError(f"Trial list {path} contains no trials")
    return trials


def _trial_problem(fields):
    if len(fields) != 3:
        return f"{len(fields)} fields instead of 3"
    if fields[0] not in ("0", "1"):
        return f"label {fields[0]!r} is not 0 or 1"
    return None


def trial_files(trials):
    """Every file of the trial list, once, sorted."""
    return sorted({path for trial in trials for path in (trial.enrol, trial.test)})


def _stack(embeddings, paths):
    return torch.stack([torch.as_tensor(embeddings[p]).float().flatten() for p in paths])


def _normalized(matrix):
    return torch.nn.functional.normalize(matrix, dim=-1)


def cosine_scores(embeddings, trials):
    """Cosine similarity of each trial's two embeddings, as a numpy array.

    Example
    -------
    >>> emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    >>> [round(float(s), 4) for s in cosine_scores(emb, [Trial(1, "a", "b"), Trial(0, "a", "a")])]
    [0.7071, 1.0]
    """
    enrol = _normalized(_stack(embeddings, [t.enrol for t in trials]))
    test = _normalized(_stack(embeddings, [t.test for t in trials]))
    return (enrol * test).sum(-1).numpy()


def speaker_cohort(embeddings, speakers):
    """One normalized mean embedding per speaker: the cohort for score normalization.

    Arguments
    ---------
    embeddings : torch.Tensor
        [n_utterances, dim].
    speakers : list
        The speaker of each row.
    """
    cohort = []
    speakers = np.asarray(speakers)
    for speaker in sorted(set(speakers.tolist())):
        rows = torch.as_tensor(np.flatnonzero(speakers == speaker))
        cohort.append(_normalized(embeddings[rows]).mean(0))
    return _normalized(torch.stack(cohort))


def normalize_scores(scores, embeddings, trials, cohort, method="s-norm", cohort_size=200):
    """Symmetric (adaptive) score normalization against a cohort.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> emb = {k: torch.randn(8, generator=g) for k in "abc"}
    >>> trials = [Trial(1, "a", "b"), Trial(0, "a", "c")]
    >>> cohort = _normalized(torch.randn(20, 8, generator=g))
    >>> raw = cosine_scores(emb, trials)
    >>> normalize_scores(raw, emb, trials, cohort).shape
    (2,)
    """
    if method not in SCORE_NORMS:
        raise ValueError(f"score_norm={method!r} is not valid; choose one of {list(SCORE_NORMS)}")
    if method is None:
        return np.asarray(scores)
    files = trial_files(trials)
    index = {path: row for row, path in enumerate(files)}
    against_cohort = _normalized(_stack(embeddings, files)) @ cohort.T
    if method == "as-norm":
        top = min(cohort_size, against_cohort.shape[1])
        against_cohort = against_cohort.topk(top, dim=1).values
    mean = against_cohort.mean(1).numpy()
    std = against_cohort.std(1).clamp_min(1e-8).numpy()
    e = np.array([index[t.enrol] for t in trials])
    t = np.array([index[t.test] for t in trials])
    scores = np.asarray(scores)
    return 0.5 * ((scores - mean[e]) / std[e] + (scores - mean[t]) / std[t])


def write_scores(path, trials, scores):
    """Writes ``enrol test label score`` lines (atomically)."""
    from fefa_speechbrain.data.io import atomic_write_text

    lines = [f"{t.enrol} {t.test} {t.label} {s:.6f}" for t, s in zip(trials, scores)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def cohort_files(train_csv, per_speaker=3, seed=0):
    """Up to ``per_speaker`` distinct training files per speaker, for the cohort.

    Returns (paths, speakers).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "train.csv").write("ID,wav,spk_id\\na,a1.wav,s1\\nb,a2.wav,s1\\nc,b1.wav,s2\\n")
    >>> cohort_files(str(tmp / "train.csv"), per_speaker=1)
    (['a2.wav', 'b1.wav'], ['s1', 's2'])
    """
    import csv
    import random

    if not os.path.isfile(train_csv):
        raise FileNotFoundError(
            f"cohort_csv {train_csv} does not exist (give the training CSV of the "
            "preparation, e.g. results/prepared/voxceleb/train.csv)"
        )
    by_speaker = {}
    with open(train_csv, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        missing = [name for name in ("wav", "spk_id") if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"cohort_csv {train_csv} lacks the columns {missing} (columns: "
                f"{reader.fieldnames}; expected a SpeechBrain CSV with wav and spk_id)"
            )
        for row in reader:
            files = by_speaker.setdefault(row["spk_id"], [])
            if row["wav"] not in files:
                files.append(row["wav"])
    if not by_speaker:
        raise ValueError(f"cohort_csv {train_csv} has no rows: no cohort to normalize with")
    rng = random.Random(seed)
    paths, speakers = [], []
    for speaker in sorted(by_speaker):
        files = sorted(by_speaker[speaker])
        for path in rng.sample(files, min(per_speaker, len(files))):
            paths.append(path)
            speakers.append(speaker)
    return paths, speakers


def evaluate_experiment(
    experiment_folder,
    verification_file,
    output_folder,
    audio_root=None,
    batch_size=16,
    score_norm=None,
    cohort_csv=None,
    cohort_utts_per_speaker=3,
    cohort_size=200,
    device="cpu",
    seed=0,
):
    """Scores a trial list with a trained model; writes scores, results JSON and DET plot.

    Every trial file is embedded once, in length-sorted batches. With ``score_norm``
    ("s-norm" or "as-norm") the cohort is built from ``cohort_csv`` (the training CSV).

    Everything that can be checked is checked before any embedding is computed: the
    options, the trial list (one error listing its bad lines), the cohort CSV, the
    checkpoint, and the header of every trial and cohort file (one error listing the
    files that are missing, unreadable, empty or too short).

    Returns
    -------
    dict : the results (EER, minDCF at p_target 0.01 and 0.05, thresholds, counts, files).
    """
    from fefa_speechbrain.data.io import atomic_write_json
    from fefa_speechbrain.inference import SpeakerEmbedder, load_experiment
    from fefa_speechbrain.metrics import det_curve, verification_report
    from fefa_speechbrain.plotting import plot_det

    if score_norm not in SCORE_NORMS:
        raise ValueError(f"score_norm={score_norm!r} is not valid; choose one of {list(SCORE_NORMS)}")
    if score_norm is not None and cohort_csv is None:
        raise ValueError(f"score_norm={score_norm!r} needs cohort_csv (the training CSV)")
    trials = read_trials(verification_file, audio_root)
    files = trial_files(trials)
    paths, speakers = [], []
    if score_norm is not None:
        paths, speakers = cohort_files(cohort_csv, cohort_utts_per_speaker, seed)
    hparams, checkpoint = load_experiment(experiment_folder, device=device)
    embedder = SpeakerEmbedder(hparams["modules"], device=device)
    embeddings = embedder.embed_files(
        files + paths, batch_size=batch_size, sample_rate=hparams.get("sample_rate", 16000)
    )
    scores = cosine_scores(embeddings, trials)
    if score_norm is not None:
        cohort = speaker_cohort(torch.stack([embeddings[p] for p in paths]), speakers)
        scores = normalize_scores(scores, embeddings, trials, cohort, score_norm, cohort_size)
    labels = np.array([t.label for t in trials])
    results = verification_report(scores, labels)
    os.makedirs(output_folder, exist_ok=True)
    outputs = {
        "scores": os.path.join(output_folder, "scores.txt"),
        "results": os.path.join(output_folder, "results.json"),
        "det_plot": os.path.join(output_folder, "det.png"),
    }
    write_scores(outputs["scores"], trials, scores)
    fpr, fnr, _ = det_curve(scores, labels)
    name = os.path.basename(os.path.normpath(experiment_folder))
    plot_det({name: (fpr, fnr)}, outputs["det_plot"])
    results.update(
        experiment=experiment_folder,
        checkpoint=str(checkpoint.path),
        verification_file=verification_file,
        score_norm=score_norm,
        n_files=len(files),
        outputs=outputs,
    )
    atomic_write_json(outputs["results"], results)
    return results
