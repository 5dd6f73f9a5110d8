"""Robustness to noise: the paper's Fig. 3 (Sec. IV.C), plus babble.

Noise (white Gaussian or uniform as in the paper, or babble made of other speakers'
recordings) is added to every test waveform *before* the spectrogram, at a set of SNRs;
each model embeds every trial file once per condition, the trials are cosine-scored and
EER and minDCF computed.

Details: ``docs/reference.md`` (fefa_speechbrain.evaluation.robustness).
"""

import hashlib
import logging
import os

import numpy as np
import torch

from fefa_speechbrain.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from fefa_speechbrain.inference.embedder import SpeakerEmbedder
from fefa_speechbrain.inference.model_source import load_model, model_kind
from fefa_speechbrain.lobes.lengths import absolute_lengths
from fefa_speechbrain.evaluation.metrics import verification_report
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.data.dataset import files_per_speaker
from fefa_speechbrain.evaluation.noise import (
    BABBLE_SPEAKERS,
    NOISE_KINDS,
    SNR_LEVELS,
    WHITE_NOISE_KINDS,
    add_noise,
    babble_noise,
    is_clean,
)
from fefa_speechbrain.plotting import plot_noise_curves
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.evaluation.verification import cosine_scores
from fefa_speechbrain.checks import check_choice

logger = logging.getLogger(__name__)

P_TARGETS = (0.01, 0.05)
BABBLE_MAX_SECONDS = 10
ROW_KEYS = ("model", "kind", "snr_db", "eer", "min_dcf_0.01", "min_dcf_0.05")
CLEAN_KIND = "none"


def snr_label(snr_db):
    """Axis label of an SNR level: "clean" or the number of dB without a useless ".0".

    Example
    -------
    >>> snr_label("clean"), snr_label(20), snr_label(20.0), snr_label(2.5)
    ('clean', '20', '20', '2.5')
    """
    if snr_db is None or snr_db == "clean":
        return "clean"
    return f"{float(snr_db):g}"


def snr_order(rows):
    """SNR labels present in the rows, from clean to the noisiest (lowest dB).

    Example
    -------
    >>> snr_order([{"snr_db": 0}, {"snr_db": "clean"}, {"snr_db": 20.0}, {"snr_db": 0}])
    ['clean', '20', '0']
    """
    numeric = {float(row["snr_db"]) for row in rows if snr_label(row["snr_db"]) != "clean"}
    levels = sorted(numeric, reverse=True)
    has_clean = any(snr_label(row["snr_db"]) == "clean" for row in rows)
    return (["clean"] if has_clean else []) + [snr_label(level) for level in levels]


def noise_curves(rows, metric="eer"):
    """The curves of Fig. 3 from result rows: (model, kind) -> (SNR labels, values).

    A clean row (its ``kind`` is "none") starts every curve of its model, so each noise
    kind's line begins at the clean result. SNR labels run from clean to the lowest dB.

    Example
    -------
    >>> rows = [{"model": "a", "kind": "none", "snr_db": "clean", "eer": 0.1},
    ...         {"model": "a", "kind": "uniform", "snr_db": 0, "eer": 0.3},
    ...         {"model": "a", "kind": "uniform", "snr_db": 20, "eer": 0.2}]
    >>> noise_curves(rows)
    {('a', 'uniform'): (['clean', '20', '0'], [0.1, 0.2, 0.3])}
    """
    order = {label: position for position, label in enumerate(snr_order(rows))}
    clean = {row["model"]: row for row in rows if snr_label(row["snr_db"]) == "clean"}
    curves = {}
    for row in rows:
        if snr_label(row["snr_db"]) == "clean":
            continue
        key = (row["model"], row["kind"])
        if key not in curves:
            curves[key] = [clean[row["model"]]] if row["model"] in clean else []
        curves[key].append(row)
    result = {}
    for key, points in curves.items():
        points = sorted(points, key=lambda row: order[snr_label(row["snr_db"])])
        result[key] = ([snr_label(p["snr_db"]) for p in points], [p[metric] for p in points])
    return result


def noise_seed(seed, kind, snr_db, samples):
    """A 63-bit generator seed from the run seed, the condition and a file's samples.

    Example
    -------
    >>> wav = torch.ones(100)
    >>> noise_seed(0, "gaussian", 20, wav) == noise_seed(0, "gaussian", 20.0, wav.clone())
    True
    >>> noise_seed(0, "gaussian", 20, wav) == noise_seed(0, "uniform", 20, wav)
    False
    """
    digest = hashlib.sha256(f"{int(seed)}|{kind}|{float(snr_db)!r}|".encode())
    digest.update(samples.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") & (2**63 - 1)


class PerFileNoise:
    """``transform(wavs, lengths)`` hook adding seeded noise to each utterance on its own.

    Each row's valid samples get noise drawn with a generator seeded by
    :func:`noise_seed`; padded samples stay untouched. The result for a file is the same
    whatever the batch it arrives in (see the module docstring).

    Arguments
    ---------
    snr_db : float
        Signal-to-noise ratio in dB.
    kind : str
        "gaussian", "uniform" or "babble".
    seed : int
        Run seed; a different seed gives different noise.
    babble_pool : list of torch.Tensor
        Recordings the babble is made of (kind "babble" only), see
        :func:`load_babble_pool`.

    Example
    -------
    >>> noise = PerFileNoise(10, "uniform", seed=0)
    >>> a, b = torch.randn(800), torch.randn(500)
    >>> padded = torch.stack([a, torch.cat([b, torch.zeros(300)])])
    >>> batch1 = noise(padded, torch.tensor([1.0, 0.625]))
    >>> batch2 = noise(b.unsqueeze(0), torch.tensor([1.0]))
    >>> torch.equal(batch1[1, :500], batch2[0]), torch.equal(batch1[1, 500:], torch.zeros(300))
    (True, True)
    """

    def __init__(self, snr_db, kind="gaussian", seed=0, babble_pool=None):
        if is_clean(snr_db):
            raise ValueError("PerFileNoise needs a number of dB; for clean audio use no transform")
        check_choice("kind", kind, NOISE_KINDS)
        if kind == "babble" and (not babble_pool or len(babble_pool) < BABBLE_SPEAKERS):
            raise ValueError(f"babble noise needs a babble_pool of >= {BABBLE_SPEAKERS} recordings")
        self.snr_db = snr_db
        self.kind = kind
        self.seed = seed
        self.babble_pool = babble_pool

    def __call__(self, wavs, lengths=None):
        """wavs [batch, samples], relative lengths [batch] -> noisy wavs, same shape."""
        abs_lens = absolute_lengths(lengths, wavs.shape[1], wavs.shape[0], wavs.device)
        noisy = wavs.clone()
        for row, length in enumerate(abs_lens.tolist()):
            samples = wavs[row, :length]
            generator = torch.Generator().manual_seed(
                noise_seed(self.seed, self.kind, self.snr_db, samples)
            )
            noise = None
            if self.kind == "babble":
                noise = babble_noise(length, self.babble_pool, generator).to(samples.dtype)
            noisy[row, :length] = add_noise(
                samples, self.snr_db, self.kind, generator=generator, noise=noise
            )
        return noisy


def load_babble_pool(csv_path, max_files=200, sample_rate=16000, seed=0):
    """Recordings for babble noise: one file per speaker of a training CSV, at most
    ``max_files`` (speakers taken evenly over the sorted list), seeded
    (:func:`fefa_speechbrain.data.dataset.files_per_speaker`, the cohort's sampler).

    Give recordings of speakers who are not in the trials, e.g. the training CSV of the
    preparation. Each file is loaded at ``sample_rate`` and kept up to 10 s.

    Example
    -------
    >>> import tempfile, soundfile
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     soundfile.write(f"{folder}/{i}.wav", np.random.randn(1600) * 0.1, 16000)
    >>> _ = open(f"{folder}/train.csv", "w").write(
    ...     "ID,wav,spk_id\\n" + "".join(f"u{i},{folder}/{i}.wav,s{i}\\n" for i in range(3)))
    >>> [w.shape for w in load_babble_pool(f"{folder}/train.csv", max_files=2)]
    [torch.Size([1600]), torch.Size([1600])]
    """
    paths, _ = files_per_speaker(csv_path, per_speaker=1, seed=seed, option="babble_csv")
    step = -(-len(paths) // max_files)
    return [torch.from_numpy(np.asarray(load_audio(path, sample_rate=sample_rate)))
            .reshape(-1)[: BABBLE_MAX_SECONDS * sample_rate].float() for path in paths[::step]]


def parse_experiments(experiments):
    """Models to compare, as an ordered dict name -> experiment folder.

    Accepts a dict, or the command-line form ``"name:folder,name:folder"``.

    Example
    -------
    >>> parse_experiments("fefa:results/a, none:results/b")
    {'fefa': 'results/a', 'none': 'results/b'}
    """
    if isinstance(experiments, str):
        pairs = [item.strip() for item in experiments.split(",") if item.strip()]
        bad = [item for item in pairs if ":" not in item or not item.split(":", 1)[0].strip()]
        if bad:
            raise ValueError(
                f"experiments: {bad[0]!r} is not 'name:folder' (expected e.g. "
                "'fefa:results/fefa_single,none:results/fefa_none')"
            )
        names = [item.split(":", 1)[0].strip() for item in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"experiments: model names must be unique, got {names}")
        experiments = {name: item.split(":", 1)[1].strip() for name, item in zip(names, pairs)}
    if not isinstance(experiments, dict) or not experiments:
        raise ValueError(
            "experiments must be a non-empty dict name -> folder or 'name:folder,...'; "
            f"got {experiments!r}"
        )
    return {str(name): str(folder) for name, folder in experiments.items()}


def check_snr_levels(snr_levels):
    """Validates SNR levels ("clean" or finite dB), without duplicates.

    Example
    -------
    >>> check_snr_levels(["clean", 20, 0.5])
    ['clean', 20, 0.5]
    >>> check_snr_levels(["loud"])
    Traceback (most recent call last):
    ...
    ValueError: snr_levels: 'loud' is neither 'clean' nor a finite number of dB
    """
    levels = list(snr_levels)
    for level in levels:
        if is_clean(level):
            continue
        number = isinstance(level, (int, float)) and not isinstance(level, bool)
        if not number or not np.isfinite(level):
            raise ValueError(f"snr_levels: {level!r} is neither 'clean' nor a finite number of dB")
    labels = [snr_label(level) for level in levels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"snr_levels: duplicate levels in {levels}")
    if not levels:
        raise ValueError("snr_levels is empty")
    return levels


def _check_kinds(kinds):
    kinds = list(kinds)
    bad = [kind for kind in kinds if kind not in NOISE_KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(
            f"kinds={kinds!r} is not valid: give distinct values among {list(NOISE_KINDS)}"
        )
    return kinds


def condition_scores(
    embedder, trials, snr_db="clean", kind="gaussian", seed=0, batch_size=16, sample_rate=16000,
    babble_pool=None,
):
    """Cosine scores of the trials with every file embedded once under one noise condition.

    Arguments
    ---------
    embedder : SpeakerEmbedder
        The model.
    trials : list of Trial
        From :func:`fefa_speechbrain.evaluation.verification.read_trials`.
    snr_db : float or "clean"
        The condition ("clean": no noise, ``kind`` ignored).
    kind : str
        "gaussian", "uniform" or "babble".
    seed : int
        Run seed of :class:`PerFileNoise`.
    batch_size : int
        Files per forward pass.
    sample_rate : int
        Rate the audio is loaded at (the model's).
    babble_pool : list of torch.Tensor
        Recordings for kind "babble".

    Returns
    -------
    numpy.ndarray : one score per trial.
    """
    transform = None if is_clean(snr_db) else PerFileNoise(snr_db, kind, seed, babble_pool)
    embeddings = embedder.embed_files(
        trial_files(trials), batch_size=batch_size, sample_rate=sample_rate, transform=transform
    )
    return cosine_scores(embeddings, trials)


def _row(model, kind, snr_db, scores, labels):
    report = verification_report(scores, labels, p_targets=P_TARGETS)
    return {
        "model": model,
        "kind": kind,
        "snr_db": "clean" if is_clean(snr_db) else snr_db,
        "eer": report["eer"],
        "min_dcf_0.01": report["min_dcf_0.01"],
        "min_dcf_0.05": report["min_dcf_0.05"],
    }


def noise_robustness(
    experiments,
    verification_file,
    audio_root=None,
    snr_levels=SNR_LEVELS,
    kinds=WHITE_NOISE_KINDS,
    batch_size=16,
    seed=0,
    device="cpu",
    babble_csv=None,
):
    """EER and minDCF of each model on a trial list, clean and under synthetic noise.

    Everything is checked (trial list, files, experiment folders, levels, kinds) before
    the first embedding. For each model: clean once (if "clean" is in ``snr_levels``),
    then every kind at every numeric SNR; every trial file is embedded once per
    condition, with the same noise for every model (see :class:`PerFileNoise`).

    Arguments
    ---------
    experiments : dict or str
        name -> MODEL (or "name:folder,name:folder"): a training output folder, a
        pretrained folder or a hub id.
    verification_file : str
        Trial list, ``label enrol test`` per line (VoxCeleb's veri_test2.txt).
    audio_root : str
        Folder the trial paths are relative to (default: the list's folder).
    snr_levels : sequence
        "clean" and/or SNRs in dB.
    kinds : sequence of str
        Noise kinds: "gaussian", "uniform", "babble".
    batch_size : int
        Files per forward pass.
    seed : int
        Seed of the noise.
    device : str
        Where the models run.
    babble_csv : str
        CSV (``wav`` column) of other speakers' recordings, needed for "babble"
        (see :func:`load_babble_pool`).

    Returns
    -------
    list of dict
        One row per model and condition, keys ``model, kind, snr_db, eer,
        min_dcf_0.01, min_dcf_0.05`` (EER as a fraction; minDCF normalized); the
        clean row has kind "none" and snr_db "clean".
    """
    experiments = parse_experiments(experiments)
    levels = check_snr_levels(snr_levels)
    kinds = _check_kinds(kinds)
    for folder in experiments.values():
        model_kind(folder)
    if "babble" in kinds and not babble_csv:
        raise ValueError("kinds has 'babble': give babble_csv (a CSV of other speakers' wavs)")
    trials = read_trials(verification_file, audio_root)
    labels = np.array([trial.label for trial in trials])
    noisy_levels = [level for level in levels if not is_clean(level)]
    pools = {}
    rows = []
    for model, folder in experiments.items():
        loaded = load_model(folder, device=device)
        logger.info("Model %s: %s", model, loaded.checkpoint)
        embedder = SpeakerEmbedder(loaded.modules, device=device)
        sample_rate = loaded.sample_rate
        if "babble" in kinds and sample_rate not in pools:
            pools[sample_rate] = load_babble_pool(babble_csv, sample_rate=sample_rate, seed=seed)
        common = dict(seed=seed, batch_size=batch_size, sample_rate=sample_rate,
                      babble_pool=pools.get(sample_rate))
        conditions = [(CLEAN_KIND, "clean")] if len(noisy_levels) < len(levels) else []
        conditions += [(kind, level) for kind in kinds for level in noisy_levels]
        for kind, level in conditions:
            scores = condition_scores(embedder, trials, level, kind, **common)
            rows.append(_row(model, kind, level, scores, labels))
            condition = "clean" if kind == CLEAN_KIND else f"{kind} noise at {snr_label(level)} dB"
            logger.info(
                "%s, %s: EER %.2f%%, minDCF(0.01) %.4f",
                model, condition, 100 * rows[-1]["eer"], rows[-1]["min_dcf_0.01"],
            )
    return rows


def markdown_table(rows):
    """The rows as markdown: an EER pivot (model x kind by SNR) and the full table.

    Example
    -------
    >>> rows = [{"model": "a", "kind": "none", "snr_db": "clean", "eer": 0.05,
    ...          "min_dcf_0.01": 0.5, "min_dcf_0.05": 0.3},
    ...         {"model": "a", "kind": "gaussian", "snr_db": 20, "eer": 0.1,
    ...          "min_dcf_0.01": 0.6, "min_dcf_0.05": 0.4}]
    >>> print(markdown_table(rows))
    EER (%) by SNR (dB); each curve starts at its model's clean result.
    <BLANKLINE>
    | model | noise | clean | 20 |
    |---|---|---|---|
    | a | gaussian | 5.00 | 10.00 |
    <BLANKLINE>
    | model | noise | SNR (dB) | EER (%) | minDCF 0.01 | minDCF 0.05 |
    |---|---|---|---|---|---|
    | a | none | clean | 5.00 | 0.5000 | 0.3000 |
    | a | gaussian | 20 | 10.00 | 0.6000 | 0.4000 |
    """
    curves = noise_curves(rows)
    levels = snr_order(rows)
    lines = [
        "EER (%) by SNR (dB); each curve starts at its model's clean result.",
        "",
        "| model | noise | " + " | ".join(levels) + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    for (model, kind), (labels, values) in curves.items():
        by_level = dict(zip(labels, values))
        cells = [f"{100 * by_level[level]:.2f}" if level in by_level else "" for level in levels]
        lines.append(f"| {model} | {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | noise | SNR (dB) | EER (%) | minDCF 0.01 | minDCF 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['kind']} | {snr_label(row['snr_db'])} | "
            f"{100 * row['eer']:.2f} | {row['min_dcf_0.01']:.4f} | {row['min_dcf_0.05']:.4f} |"
        )
    return "\n".join(lines)


def write_report(rows, output_folder, metadata=None):
    """Writes the results: markdown, CSV, JSON and the EER-vs-SNR plot (all atomic).

    Arguments
    ---------
    rows : list of dict
        From :func:`noise_robustness`.
    output_folder : str
        Created if missing.
    metadata : dict
        Stored in the JSON beside the rows (e.g. trial list, seed, experiments).

    Returns
    -------
    dict : kind of output -> path (``markdown``, ``csv``, ``json``, ``plot``).
    """
    files = {
        "markdown": os.path.join(output_folder, "noise_robustness.md"),
        "csv": os.path.join(output_folder, "noise_robustness.csv"),
        "json": os.path.join(output_folder, "noise_robustness.json"),
        "plot": os.path.join(output_folder, "noise_robustness.png"),
    }
    atomic_write_text(files["markdown"], markdown_table(rows) + "\n")
    atomic_write_csv(files["csv"], rows, ROW_KEYS)
    document = dict(metadata or {})
    document["snr_definition"] = (
        "per utterance: 10 log10(mean square of the signal / mean square of the added "
        "noise) over the utterance's samples; noise added to the waveform before the features"
    )
    document["rows"] = rows
    atomic_write_json(files["json"], document)
    plot_noise_curves(noise_curves(rows), snr_order(rows), files["plot"])
    return files
