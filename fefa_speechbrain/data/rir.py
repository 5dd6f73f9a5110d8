"""Synthetic room impulse responses, for reverberation when no RIR corpus is at hand.

SpeechBrain's ``AddReverb`` convolves with impulse responses listed in a CSV file
(SpeechBrain's extended CSV: ``ID, duration, wav, wav_format, wav_opts``), usually a downloaded corpus of measured rooms. Offline, or to
keep a recipe self-contained, :func:`write_synthetic_rirs` writes such a CSV with
statistical responses: a direct-path impulse followed by Gaussian noise under an
exponential envelope that falls by 60 dB after the reverberation time RT60 (Sabine's
diffuse-field model), with a random direct-to-reverberant ratio.
"""

import math
import os

import numpy as np
import soundfile as sf

from fefa_speechbrain.atomic import atomic_open, atomic_write_csv


def synthetic_rir(rt60, drr_db, sample_rate, rng):
    """One impulse response (float32, peak 1 at sample 0) of ``rt60`` seconds.

    Arguments
    ---------
    rt60 : float
        Reverberation time in seconds (the tail falls by 60 dB in this time).
    drr_db : float
        Direct-to-reverberant energy ratio in dB.
    sample_rate : int
        Sampling rate of the response.
    rng : numpy.random.Generator
        Source of the random tail.

    Example
    -------
    >>> rir = synthetic_rir(0.5, 0.0, 16000, np.random.default_rng(0))
    >>> len(rir), float(rir[0])
    (8000, 1.0)
    >>> round(float(10 * np.log10(1.0 / np.sum(rir[1:] ** 2))), 3)
    0.0
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    length = max(2, int(round(rt60 * sample_rate)))
    times = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * np.exp(-math.log(1000.0) * times / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    peak = np.max(np.abs(tail))
    if peak >= 1.0:  # keep the direct path the largest sample (AddReverb aligns on it)
        tail *= 0.99 / peak
    return np.concatenate([[1.0], tail]).astype(np.float32)


def write_synthetic_rirs(csv_path, count=200, sample_rate=16000, rt60_range=(0.2, 1.0),
                         drr_range=(-3.0, 12.0), seed=0):
    """Writes ``count`` synthetic impulse responses next to ``csv_path`` and the CSV.

    RT60 and the direct-to-reverberant ratio are drawn uniformly in their ranges. Every
    file is written atomically and the CSV last, so a CSV on disk always lists complete
    files; calling again rewrites the same responses (same seed). Returns ``csv_path``.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = write_synthetic_rirs(os.path.join(folder, "rirs.csv"), count=3)
    >>> open(path).read().splitlines()[0]
    'ID,duration,wav,wav_format,wav_opts'
    """
    low, high = rt60_range
    if not 0 < low <= high:
        raise ValueError(f"rt60_range must satisfy 0 < low <= high, got {rt60_range}")
    folder = os.path.dirname(os.path.abspath(csv_path))
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        rt60 = rng.uniform(low, high)
        rir = synthetic_rir(rt60, rng.uniform(*drr_range), sample_rate, rng)
        path = os.path.join(folder, f"rir_{index:04d}.wav")
        with atomic_open(path, "wb") as fout:
            sf.write(fout, rir, sample_rate, format="WAV", subtype="FLOAT")
        rows.append({"ID": f"rir_{index:04d}", "duration": len(rir) / sample_rate, "wav": path,
                     "wav_format": "wav", "wav_opts": ""})
    atomic_write_csv(csv_path, rows, ["ID", "duration", "wav", "wav_format", "wav_opts"])
    return csv_path


def ensure_rir_csv(rir_csv, prep_folder, sample_rate=16000):
    """The RIR CSV reverberation reads: given, or synthetic when it is to be made.

    A missing ``rir_csv`` inside ``prep_folder`` (the recipe's default,
    ``<prep_folder>/rirs/rirs.csv``) is written with :func:`write_synthetic_rirs`; a
    missing one elsewhere is an error, so that a mistyped path to a real RIR corpus is
    not silently replaced by synthetic responses. Returns ``rir_csv``.

    Example
    -------
    >>> import tempfile
    >>> prep = tempfile.mkdtemp()
    >>> path = ensure_rir_csv(os.path.join(prep, "rirs", "rirs.csv"), prep)
    >>> os.path.isfile(path)
    True
    >>> ensure_rir_csv("/no/such/RIRS.csv", prep)
    Traceback (most recent call last):
    ...
    FileNotFoundError: rir_csv /no/such/RIRS.csv does not exist (give a SpeechBrain RIR CSV, or leave rir_csv inside prep_folder for synthetic responses)
    """
    if os.path.isfile(rir_csv):
        return rir_csv
    inside = os.path.commonpath([os.path.abspath(rir_csv), os.path.abspath(prep_folder)])
    if inside != os.path.abspath(prep_folder):
        raise FileNotFoundError(
            f"rir_csv {rir_csv} does not exist (give a SpeechBrain RIR CSV, or leave rir_csv "
            "inside prep_folder for synthetic responses)"
        )
    return write_synthetic_rirs(rir_csv, sample_rate=sample_rate)
