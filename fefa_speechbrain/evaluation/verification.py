"""Speaker verification: cosine scoring of a trial list, score normalization, EER/minDCF.

The trial list is read and checked by :mod:`fefa_speechbrain.data.trials` before any
embedding is computed.

Score normalization against a cohort of training embeddings (one per training speaker,
the mean of its utterances' embeddings):

- ``s-norm``: ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`` with the mean and
  standard deviation of the enrol (test) embedding's scores against the whole cohort;
- ``as-norm``: the same statistics over the ``cohort_size`` highest cohort scores of
  each side only (adaptive s-norm).
"""

import os

import numpy as np
import torch

from fefa_speechbrain.atomic import atomic_open, atomic_write_json, check_writable_folder
from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.data.dataset import files_per_speaker
from fefa_speechbrain.data.trials import quote_path, read_trials, trial_files
from fefa_speechbrain.inference.embedder import SpeakerEmbedder
from fefa_speechbrain.evaluation.metrics import det_curve, verification_report
from fefa_speechbrain.inference.model_source import load_model
from fefa_speechbrain.plotting import plot_det

SCORE_NORMS = (None, "s-norm", "as-norm")
MAX_REPORTED_LINES = 10


SCORE_CHUNK = 16384  # trials scored at once: memory grows with the files, not the trials


def _stack(embeddings, paths):
    return torch.stack([torch.as_tensor(embeddings[p]).float().flatten() for p in paths])


def _normalized(matrix):
    return torch.nn.functional.normalize(matrix, dim=-1)


def trial_indices(trials, files):
    """``(enrol, test)`` row indices of every trial into ``files``, as int64 arrays.

    Example
    -------
    >>> from fefa_speechbrain.data.trials import Trial
    >>> trial_indices([Trial(1, "b", "a"), Trial(0, "a", "c")], ["a", "b", "c"])
    (array([1, 0]), array([0, 2]))
    """
    row = {path: number for number, path in enumerate(files)}
    enrol = np.fromiter((row[t.enrol] for t in trials), dtype=np.int64, count=len(trials))
    test = np.fromiter((row[t.test] for t in trials), dtype=np.int64, count=len(trials))
    return enrol, test


def cosine_scores(embeddings, trials):
    """Cosine similarity of each trial's two embeddings, as a numpy array.

    Each file's embedding is normalized once; trials are scored by index, a chunk at a
    time, so a million trials over a few files take a few megabytes.

    Example
    -------
    >>> from fefa_speechbrain.data.trials import Trial
    >>> emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    >>> [round(float(s), 4) for s in cosine_scores(emb, [Trial(1, "a", "b"), Trial(0, "a", "a")])]
    [0.7071, 1.0]
    """
    files = trial_files(trials)
    matrix = _normalized(_stack(embeddings, files))
    enrol, test = trial_indices(trials, files)
    scores = np.empty(len(trials), dtype=np.float32)
    for start in range(0, len(trials), SCORE_CHUNK):
        e = torch.from_numpy(enrol[start:start + SCORE_CHUNK])
        t = torch.from_numpy(test[start:start + SCORE_CHUNK])
        scores[start:start + SCORE_CHUNK] = (matrix[e] * matrix[t]).sum(-1).numpy()
    return scores


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
    >>> from fefa_speechbrain.data.trials import Trial
    >>> trials = [Trial(1, "a", "b"), Trial(0, "a", "c")]
    >>> cohort = _normalized(torch.randn(20, 8, generator=g))
    >>> raw = cosine_scores(emb, trials)
    >>> normalize_scores(raw, emb, trials, cohort).shape
    (2,)
    """
    check_choice("score_norm", method, SCORE_NORMS)
    if method is None:
        return np.asarray(scores)
    files = trial_files(trials)
    against_cohort = _normalized(_stack(embeddings, files)) @ cohort.T
    if method == "as-norm":
        top = min(cohort_size, against_cohort.shape[1])
        against_cohort = against_cohort.topk(top, dim=1).values
    mean = against_cohort.mean(1).numpy()
    std = against_cohort.std(1).clamp_min(1e-8).numpy()
    e, t = trial_indices(trials, files)
    scores = np.asarray(scores)
    return 0.5 * ((scores - mean[e]) / std[e] + (scores - mean[t]) / std[t])


def write_scores(path, trials, scores):
    """Writes ``enrol test label score`` lines, or ``enrol test score`` for unlabelled
    trials (atomically, streamed; paths with spaces quoted as in trial lists)."""
    with atomic_open(path) as handle:
        for trial, score in zip(trials, scores):
            label = "" if trial.label is None else f" {trial.label}"
            handle.write(f"{quote_path(trial.enrol)} {quote_path(trial.test)}{label} {score:.6f}\n")


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
    progress=None,
    allow_outside_root=False,
):
    """Scores a trial list with a trained model; writes scores, results JSON and DET plot.

    Every trial file is embedded once, in length-sorted batches. With ``score_norm``
    ("s-norm" or "as-norm") the cohort is built from ``cohort_csv`` (the training CSV).

    Everything that can be checked is checked before any embedding is computed: the
    options, that ``output_folder`` can be written, the trial list (one error listing
    its bad lines; paths must stay under ``audio_root`` unless ``allow_outside_root``),
    the cohort CSV, the checkpoint, and the header of every trial and cohort file (one
    error listing the files that are missing, unreadable, empty or too short).

    ``experiment_folder`` is any MODEL: a training run, a pretrained folder or a hub id
    (:func:`~fefa_speechbrain.inference.model_source.load_model`); ``progress``, if
    given, is called as ``progress(files_done, files_total)`` after every batch.

    Returns
    -------
    dict : the results (EER, minDCF at p_target 0.01 and 0.05, thresholds, counts, files).
    """
    check_choice("score_norm", score_norm, SCORE_NORMS)
    if score_norm is not None and cohort_csv is None:
        raise ValueError(f"score_norm={score_norm!r} needs cohort_csv (the training CSV)")
    check_writable_folder(output_folder)
    trials = read_trials(verification_file, audio_root, allow_outside_root=allow_outside_root)
    files = trial_files(trials)
    paths, speakers = [], []
    if score_norm is not None:
        paths, speakers = files_per_speaker(cohort_csv, cohort_utts_per_speaker, seed,
                                            option="cohort_csv")
    model = load_model(experiment_folder, device=device)
    embedder = SpeakerEmbedder(model.modules, device=device)
    embeddings = embedder.embed_files(
        files + paths, batch_size=batch_size, sample_rate=model.sample_rate, progress=progress
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
        checkpoint=model.checkpoint,
        verification_file=verification_file,
        score_norm=score_norm,
        n_files=len(files),
        outputs=outputs,
    )
    atomic_write_json(outputs["results"], results)
    return results
