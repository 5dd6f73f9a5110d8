"""Datasets for speaker-embedding training, on SpeechBrain's DynamicItemDataset.

The CSVs are those of SpeechBrain's VoxCeleb recipe (``ID, duration, wav, start, stop,
spk_id``; start/stop in samples), so CSVs made by SpeechBrain's own preparation work
unchanged. Training items are random crops of ``sentence_len`` seconds inside each
chunk; a chunk shorter than that is used whole (the models are length-aware, so the
padding added by batching does not leak into the embedding).

A file that cannot be read at training time (possible when preparation only checked
headers) does not stop the run: the item becomes ``audio_ok = False`` with a short silent
signal, a warning names the file once, and the recipe's ``SpeakerBrain``
leaves such items out of the loss.
"""

import csv
import logging
import os
import random

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from fefa_speechbrain.data.audio import AudioError, load_audio

logger = logging.getLogger(__name__)

_reported_bad_files = set()


def crop_bounds(start, stop, crop_samples, rng=random, randomize=True):
    """A window of ``crop_samples`` inside [start, stop), or the whole span if shorter.

    The window is random when ``randomize``, else the first ``crop_samples``.

    Example
    -------
    >>> crop_bounds(0, 100, 200)
    (0, 100)
    >>> s, e = crop_bounds(0, 1000, 300, random.Random(0)); e - s, 0 <= s <= 700
    (300, True)
    """
    if crop_samples is None or stop - start <= crop_samples:
        return start, stop
    offset = rng.randint(0, stop - start - crop_samples) if randomize else 0
    return start + offset, start + offset + crop_samples


def read_segment(wav, start, stop, sample_rate):
    """Reads ``wav[start:stop]``; on a bad file returns (silence, False) and warns once."""
    try:
        return load_audio(wav, start=start, stop=stop, sample_rate=sample_rate), True
    except AudioError as err:
        if wav not in _reported_bad_files:
            _reported_bad_files.add(wav)
            logger.warning("Skipping unreadable training audio: %s", err)
        return torch.zeros(max(stop - start, 1) if stop else sample_rate), False


def _check_not_empty(csv_path):
    """A clear error for a missing or empty CSV (SpeechBrain raises an IndexError)."""
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path} does not exist: run the data preparation first")
    with open(csv_path, encoding="utf-8") as fin:
        rows = sum(1 for line in fin if line.strip()) - 1
    if rows < 1:
        raise ValueError(
            f"{csv_path} has no rows. Training needs a validation set for the per-epoch "
            "error and checkpoints: give every speaker more files, or a larger dev share, "
            "e.g. --split_ratio=[75,25]"
        )


def speaker_dataset(
    csv_path, crop_seconds=None, sample_rate=16000, data_root=None, random_crop=True
):
    """A DynamicItemDataset yielding ``sig`` (a crop), ``audio_ok`` and ``spk_id``.

    Arguments
    ---------
    csv_path : str
        SpeechBrain-style CSV (ID, duration, wav, start, stop, spk_id).
    crop_seconds : float or None
        Random crop length; None reads each chunk whole (validation, embedding).
    sample_rate : int
        Target rate; other rates are resampled at load time.
    data_root : str
        Replaces ``$data_root`` in the CSV's wav column, as in SpeechBrain.
    random_crop : bool
        Random crops (training) or the first ``crop_seconds`` of each chunk (validation,
        so that the validation error is comparable across epochs).
    """
    _check_not_empty(csv_path)
    replacements = {"data_root": data_root} if data_root else {}
    dataset = DynamicItemDataset.from_csv(csv_path=csv_path, replacements=replacements)
    crop = None if crop_seconds is None else int(round(crop_seconds * sample_rate))

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig", "audio_ok")
    def audio_pipeline(wav, start, stop):
        begin, end = crop_bounds(int(start), int(stop), crop, randomize=random_crop)
        sig, ok = read_segment(wav, begin, end, sample_rate)
        yield sig
        yield ok

    sb.dataio.dataset.add_dynamic_item([dataset], audio_pipeline)
    return dataset


def add_label_pipeline(datasets, label_encoder):
    """Adds ``spk_id_encoded`` ([1] long tensor) to every dataset."""

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id_encoded")
    def label_pipeline(spk_id):
        yield label_encoder.encode_sequence_torch([spk_id])

    sb.dataio.dataset.add_dynamic_item(datasets, label_pipeline)


def files_per_speaker(csv_path, per_speaker=1, seed=0, option="csv"):
    """Up to ``per_speaker`` distinct files of each speaker of a training CSV, seeded.

    Used for the score-normalization cohort and for the babble of the noise test: a
    fixed, speaker-balanced sample of a SpeechBrain CSV (``wav`` and ``spk_id`` columns;
    a file cut into several chunks counts once). ``option`` names the setting the CSV
    came from in error messages. Returns (paths, speakers), speakers sorted.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "train.csv").write("ID,wav,spk_id\\na,a1.wav,s1\\nb,a2.wav,s1\\nc,b1.wav,s2\\n")
    >>> files_per_speaker(str(tmp / "train.csv"), per_speaker=1)
    (['a2.wav', 'b1.wav'], ['s1', 's2'])
    """
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(
            f"{option} {csv_path} does not exist (give the training CSV of the "
            "preparation, e.g. results/prepared/voxceleb/train.csv)"
        )
    by_speaker = {}
    with open(csv_path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        missing = [name for name in ("wav", "spk_id") if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{option} {csv_path} lacks the columns {missing} (columns: "
                f"{reader.fieldnames}; expected a SpeechBrain CSV with wav and spk_id)"
            )
        for row in reader:
            files = by_speaker.setdefault(row["spk_id"], [])
            if row["wav"] not in files:
                files.append(row["wav"])
    if not by_speaker:
        raise ValueError(f"{option} {csv_path} has no rows")
    rng = random.Random(seed)
    paths, speakers = [], []
    for speaker in sorted(by_speaker):
        files = sorted(by_speaker[speaker])
        for path in rng.sample(files, min(per_speaker, len(files))):
            paths.append(path)
            speakers.append(speaker)
    return paths, speakers
