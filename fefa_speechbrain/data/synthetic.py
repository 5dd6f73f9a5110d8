"""A deterministic synthetic speaker corpus in the VoxCeleb layout (the built-in demo data).

The corpus lets the whole VoxCeleb code path (preparation, training, verification) run
where VoxCeleb is not available. It is written exactly like VoxCeleb1::

    <out>/wav/id10001/<session>/00001.wav     16 kHz mono 16-bit PCM
    <out>/veri_test2.txt                      "label enrol test", paths relative to wav/
    <out>/synthetic_manifest.json             configuration, speakers, file list

Speakers are ``id10001, id10002, ...``; the *last* ``n_test_speakers`` of them are the
test speakers of the trial list, so a preparation that removes the speakers of the trial
list from training (as SpeechBrain's VoxCeleb recipe does) trains on the others.

How the audio is made (source-filter synthesis, vectorized with numpy)
----------------------------------------------------------------------
Speaker (fixed for all of a speaker's sessions), drawn from a generator seeded by
``(seed, speaker index)`` so that adding speakers never changes the existing ones:

- sex-like pitch range: f0 mean around 118 Hz or 210 Hz, intonation spread 1-3.5
  semitones, jitter (period perturbation) and shimmer (pulse amplitude perturbation);
- vocal-tract length: one factor scales every formant (about 1.17 between the two
  ranges), plus a speaker offset per formant and per vowel, a bandwidth factor and a
  fixed anti-resonance at 4-5 kHz (like the piriform fossa's dip);
- glottal source: spectral tilt (corner frequency and roll-off slope of the pulse
  spectrum), breathiness (pitch-synchronous aspiration noise);
- habits: speaking tempo, how often each vowel is used (accent, idiolect), fricative
  colour and loudness.

Utterance content: a random sequence of vowel-like voiced segments (formant targets from
a 12-vowel inventory, Hillenbrand et al. 1995 adult male averages, moved by the speaker's
vocal tract, with smooth formant transitions), fricative-like unvoiced segments (noise
through an s/sh/f/x-like band) and pauses, with random durations, stress, intonation and
declination. The time-varying vocal-tract filter (five digital resonators) is applied
frame by frame in the short-time Fourier domain (32 ms sqrt-Hann windows, 75 % overlap).

Session (the nuisance): a different "video" per session with its own microphone
(band-pass with random edges of 50-200 Hz and 4.5-7.6 kHz and order 1-2, 0-2 resonances
of up to +-6 dB, a first-order spectral tilt), room (reverberation time 0.05-0.4 s,
direct-to-reverberant ratio 3-15 dB), background noise (coloured noise with a random
slope and bumps, mains hum in about 30 % of sessions, slowly fluctuating) at a random
SNR of 8-30 dB (speech and noise power over the whole utterance), a random level, and a
slightly different voice state (f0 and tilt). Every utterance is peak-normalized to a
random level below 0.9, never clipped. The same speaker in two sessions therefore
differs by more than content: a cosine between mean log-spectra (no training) separates
speakers only partly, a trained system must learn to ignore the channel.

Difficulty (``benchmarks/bench_corpus_difficulty.py``, results in benchmarks/RESULTS.md):
on this module's default corpus (seed 0), a cosine between mean log-spectra, with no
training, gives 38.1 % EER on its trial list, and LDA on the same features fitted on the
30 training speakers 22.3 %; on the demo's corpus (100 speakers, 30 of them for the test,
5-10 s utterances) 46.7 % and 13.3 % (70 training speakers). ``GENERATOR_VERSION``
changes whenever the audio does, so that corpora of an older version are regenerated.

Determinism: the same arguments give byte-identical files (with the same numpy/scipy on
the same platform), whatever the number of worker processes. :func:`generate_corpus` is
idempotent: it does nothing when the manifest says the folder already holds the same
configuration and every listed file is there, and regenerates otherwise (removing the
files of the previous configuration, and only those: files it did not write are never
deleted). Every file is written atomically and
the manifest last, so an interrupted run is never mistaken for a complete corpus.

Command line::

    python -m fefa_speechbrain.data.synthetic OUT_DIR [--speakers 40 --test-speakers 10
        --sessions 3 --utts 4 --min-dur 2 --max-dur 5 --seed 0 --trials N --jobs 2]
"""

import argparse
import contextlib
import functools
import itertools
import json
import multiprocessing
import os
import string
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from scipy.signal import butter, fftconvolve, sosfilt
from tqdm import tqdm

from fefa_speechbrain.data.io import atomic_open, atomic_write_json, atomic_write_text

GENERATOR_VERSION = 2
MANIFEST_NAME = "synthetic_manifest.json"
PENDING_NAME = ".synthetic_pending.json"
FIRST_SPEAKER_NUMBER = 10001
SESSION_ID_LENGTH = 11
SESSION_ALPHABET = string.ascii_letters + string.digits + "-_"

# Random streams: every generator is seeded by (seed, stream, indices...).
_SPEAKER_STREAM, _SESSION_STREAM, _UTTERANCE_STREAM, _TRIALS_STREAM = 0, 1, 2, 3

# F1-F3 (Hz) of 12 American English vowels, adult male averages (Hillenbrand et al. 1995).
VOWEL_FORMANTS_HZ = np.array(
    [
        [342, 2322, 3000],  # i
        [427, 2034, 2684],  # I
        [476, 2089, 2691],  # e
        [580, 1799, 2605],  # E
        [588, 1952, 2601],  # ae
        [768, 1333, 2522],  # a
        [652, 997, 2538],  # open o
        [497, 910, 2459],  # o
        [469, 1122, 2434],  # U
        [378, 997, 2343],  # u
        [623, 1200, 2550],  # V
        [474, 1379, 1710],  # r-coloured
    ],
    dtype=float,
)
UPPER_FORMANTS_HZ = np.array([3500.0, 4500.0])  # F4, F5 of the reference (male) tract
FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 200.0, 260.0])
# Fricative noise bands (centre, width in Hz) for the reference tract: s, sh, f, x.
FRICATIVE_BANDS_HZ = np.array([[6000, 1800], [3300, 900], [4500, 3500], [1900, 700]], float)

PAUSE, VOICED, UNVOICED = 0, 1, 2
SEGMENT_SECONDS = {PAUSE: (0.05, 0.3), VOICED: (0.07, 0.25), UNVOICED: (0.05, 0.15)}
# Probability of the next segment kind (pause, voiced, unvoiced) given the current one.
NEXT_KIND = {PAUSE: (0.0, 0.65, 0.35), VOICED: (0.3, 0.35, 0.35), UNVOICED: (0.15, 0.85, 0.0)}


@dataclass(frozen=True, eq=False)
class Voice:
    """The fixed vocal properties of one speaker (see :func:`draw_voice`)."""

    female: bool
    formant_scale: float
    vowel_formants: np.ndarray  # [n_vowels, 5] formant frequencies in Hz
    bandwidth_scale: float
    f0_hz: float
    f0_spread_semitones: float
    glottal_corner_hz: float
    glottal_slope: float
    breathiness: float
    jitter: float
    shimmer: float
    tempo: float
    fricative_scale: float
    fricative_level: float
    antiresonance_hz: float
    antiresonance_bandwidth_hz: float
    vowel_weights: np.ndarray  # [n_vowels] how often the speaker uses each vowel


@dataclass(frozen=True, eq=False)
class Session:
    """One recording session of a speaker: voice state, room, microphone, noise, level."""

    session_id: str
    f0_factor: float
    slope_shift: float
    room_response: np.ndarray
    channel_sos: np.ndarray
    snr_db: float
    noise_exponent: float
    noise_bumps: tuple  # ((centre_hz, gain_db, width_octaves), ...)
    hum_hz: float  # 0.0 when the session has no mains hum
    hum_fraction: float
    peak: float


def speaker_id(index):
    """VoxCeleb-style id of the speaker with 0-based ``index``.

    Example
    -------
    >>> speaker_id(0), speaker_id(39)
    ('id10001', 'id10040')
    """
    return f"id{FIRST_SPEAKER_NUMBER + index:05d}"


def draw_voice(seed, speaker_index):
    """The voice of speaker ``speaker_index``, from a generator seeded by (seed, index).

    Example
    -------
    >>> voice = draw_voice(0, 3)
    >>> voice.vowel_formants.shape
    (12, 5)
    >>> draw_voice(0, 3).f0_hz == voice.f0_hz != draw_voice(0, 4).f0_hz
    True
    """
    rng = np.random.default_rng([seed, _SPEAKER_STREAM, speaker_index])
    female = bool(rng.random() < 0.5)
    formant_scale = float(np.exp(rng.normal(np.log(1.17 if female else 1.0), 0.07)))
    reference = np.concatenate(
        [VOWEL_FORMANTS_HZ, np.broadcast_to(UPPER_FORMANTS_HZ, (len(VOWEL_FORMANTS_HZ), 2))],
        axis=1,
    )
    formant_offsets = np.exp(rng.normal(0.0, 0.09, 5))
    vowel_offsets = np.exp(rng.normal(0.0, 0.06, reference.shape))
    return Voice(
        female=female,
        formant_scale=formant_scale,
        vowel_formants=reference * formant_scale * formant_offsets * vowel_offsets,
        bandwidth_scale=float(np.exp(rng.normal(0.0, 0.3))),
        f0_hz=float(np.clip(np.exp(rng.normal(np.log(210 if female else 118), 0.15)), 70, 330)),
        f0_spread_semitones=float(rng.uniform(1.0, 3.5)),
        glottal_corner_hz=float(np.exp(rng.uniform(np.log(80.0), np.log(600.0)))),
        glottal_slope=float(rng.uniform(1.4, 2.8)),
        breathiness=float(np.exp(rng.uniform(np.log(0.04), np.log(0.3)))),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.12)),
        tempo=float(rng.uniform(0.8, 1.25)),
        fricative_scale=formant_scale * float(np.exp(rng.normal(0.0, 0.06))),
        fricative_level=float(np.exp(rng.uniform(np.log(0.15), np.log(0.5)))),
        antiresonance_hz=formant_scale * float(rng.uniform(3800.0, 5200.0)),
        antiresonance_bandwidth_hz=float(rng.uniform(150.0, 500.0)),
        vowel_weights=rng.dirichlet(np.full(len(VOWEL_FORMANTS_HZ), 2.0)),
    )


def _session_id(rng):
    """An 11-character YouTube-like id whose first character is alphanumeric."""
    first = rng.integers(0, 62)
    rest = rng.integers(0, len(SESSION_ALPHABET), SESSION_ID_LENGTH - 1)
    return "".join(SESSION_ALPHABET[i] for i in [first, *rest])


def _room_response(rng, sample_rate):
    """Direct path plus an exponentially decaying noise tail (random RT60 and DRR)."""
    rt60 = rng.uniform(0.05, 0.4)
    drr_db = rng.uniform(3.0, 15.0)
    gap = int(rng.uniform(0.002, 0.01) * sample_rate)
    length = max(int(rt60 * sample_rate), gap + 2)
    times = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * times / rt60)
    tail[:gap] = 0.0
    tail *= np.sqrt(1.0 / (np.sum(tail**2) * 10 ** (drr_db / 10)))
    tail[0] += 1.0
    return tail


def _peaking_section(freq, gain_db, q, sample_rate):
    """One peaking-equalizer biquad (RBJ audio-EQ cookbook) as an SOS row."""
    amplitude = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * amplitude, -2 * np.cos(w0), 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, -2 * np.cos(w0), 1 - alpha / amplitude]
    return np.array(b + a) / a[0]


def _channel_filter(rng, sample_rate):
    """A random microphone: band-pass, 0-2 resonances and a first-order tilt, as SOS."""
    nyquist = sample_rate / 2
    low = np.exp(rng.uniform(np.log(50.0), np.log(150.0)))
    high = min(rng.uniform(5000.0, 7600.0), 0.95 * nyquist)
    order = int(rng.integers(1, 3))
    sections = [butter(order, [low, high], "bandpass", fs=sample_rate, output="sos")]
    for _ in range(int(rng.integers(0, 3))):
        freq = np.exp(rng.uniform(np.log(300.0), np.log(min(6000.0, 0.8 * nyquist))))
        gain_db = float(np.clip(rng.normal(0.0, 3.0), -6.0, 6.0))
        sections.append(_peaking_section(freq, gain_db, rng.uniform(0.7, 4.0), sample_rate)[None])
    tilt = rng.uniform(-0.2, 0.2)
    sections.append(np.array([[1.0, -tilt, 0.0, 1.0, 0.0, 0.0]]))
    return np.concatenate(sections)


def draw_session(seed, speaker_index, session_index, sample_rate=16000):
    """Session ``session_index`` of a speaker, from a generator seeded by all three.

    Example
    -------
    >>> session = draw_session(0, 0, 1)
    >>> len(session.session_id), 5.0 <= session.snr_db <= 30.0, session.peak < 0.9
    (11, True, True)
    >>> draw_session(0, 0, 1).session_id == session.session_id != draw_session(0, 0, 2).session_id
    True
    """
    rng = np.random.default_rng([seed, _SESSION_STREAM, speaker_index, session_index])
    session_id = _session_id(rng)
    f0_factor = float(np.exp(rng.normal(0.0, 0.05)))
    slope_shift = float(rng.normal(0.0, 0.15))
    room = _room_response(rng, sample_rate)
    channel = _channel_filter(rng, sample_rate)
    snr_db = float(rng.uniform(10.0, 30.0))
    noise_exponent = float(rng.uniform(0.3, 1.7))
    bumps = tuple(
        (
            float(np.exp(rng.uniform(np.log(100.0), np.log(0.8 * sample_rate / 2)))),
            float(rng.uniform(-6.0, 8.0)),
            float(rng.uniform(0.2, 1.0)),
        )
        for _ in range(int(rng.integers(0, 3)))
    )
    has_hum = rng.random() < 0.3
    hum_hz = float(rng.choice([50.0, 60.0])) if has_hum else 0.0
    hum_fraction = float(rng.uniform(0.1, 0.6)) if has_hum else 0.0
    return Session(
        session_id=session_id,
        f0_factor=f0_factor,
        slope_shift=slope_shift,
        room_response=room,
        channel_sos=channel,
        snr_db=snr_db,
        noise_exponent=noise_exponent,
        noise_bumps=bumps,
        hum_hz=hum_hz,
        hum_fraction=hum_fraction,
        peak=float(rng.uniform(0.3, 0.85)),
    )


def _slow_contour(rng, times, low_hz=0.3, high_hz=2.5, components=3, step=0.005):
    """A smooth random contour with unit RMS: a sum of slow random sinusoids.

    Evaluated every ``step`` seconds and linearly interpolated at ``times``.
    """
    freqs = rng.uniform(low_hz, high_hz, components)
    phases = rng.uniform(0.0, 2 * np.pi, components)
    amplitudes = rng.uniform(0.3, 1.0, components)
    grid = np.arange(times[0], times[-1] + 2 * step, step)
    waves = np.sin(2 * np.pi * freqs[:, None] * grid[None] + phases[:, None])
    contour = amplitudes @ waves / np.sqrt(np.sum(amplitudes**2) / 2)
    return np.interp(times, grid, contour)


def _moving_average(x, width):
    """Centred moving average of ``width`` points along the last axis, edges held."""
    before, after = width // 2, width - 1 - width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before + 1, after)], mode="edge")
    padded[..., 0] = 0.0
    totals = np.cumsum(padded, axis=-1)
    return (totals[..., width:] - totals[..., :-width]) / width


def _smooth(x, width):
    """Triangular-weighted moving average spanning about ``width`` points (edges held)."""
    half = 2 * max(int(round(width / 4)), 0) + 1
    return _moving_average(_moving_average(x, half), half)


def _plan_segments(voice, rng, n_samples, sample_rate):
    """Segment kinds, lengths (samples), vowel, fricative and level of each segment.

    A short pause opens the utterance and a voiced segment always follows it.
    """
    lead = int(sample_rate * rng.uniform(0.02, min(0.25, 0.2 * n_samples / sample_rate)))
    kinds, lengths = [PAUSE], [max(lead, 1)]
    vowels, fricatives, levels = [0], [0], [0.0]
    kind, total = VOICED, lengths[0]
    while total < n_samples:
        seconds = rng.uniform(*SEGMENT_SECONDS[kind]) * (voice.tempo if kind == VOICED else 1.0)
        length = max(int(seconds * sample_rate), 1)
        kinds.append(kind)
        lengths.append(length)
        vowels.append(int(rng.choice(len(VOWEL_FORMANTS_HZ), p=voice.vowel_weights)))
        fricatives.append(int(rng.integers(len(FRICATIVE_BANDS_HZ))))
        levels.append(float(np.exp(rng.normal(0.0, 0.3))))
        total += length
        kind = int(rng.choice(3, p=NEXT_KIND[kind]))
    return tuple(np.array(v) for v in (kinds, lengths, vowels, fricatives, levels))


def _glottal_pulses(f0, rng, jitter, shimmer, sample_rate):
    """Pulse train at the instantaneous ``f0`` with jitter and shimmer; also the phase.

    Pulses sit at fractional positions (split linearly between two samples).
    """
    n = f0.size
    phase = np.cumsum(f0) / sample_rate
    cycle = np.floor(phase)
    starts = np.flatnonzero(np.diff(cycle)) + 1
    period = sample_rate / f0[starts]
    times = starts - (phase[starts] - cycle[starts]) * period
    times = times + jitter * period * rng.standard_normal(starts.size)
    times = np.clip(times, 0.0, n - 1.000001)
    amplitudes = np.exp(shimmer * rng.standard_normal(starts.size))
    first = np.floor(times).astype(int)
    weight = times - first
    pulses = np.bincount(first, amplitudes * (1 - weight), minlength=n)
    pulses += np.bincount(first + 1, amplitudes * weight, minlength=n)
    return pulses[:n], phase


def _stft(signals, n_fft, hop):
    """Short-time spectra [..., frames, bins] with a sqrt-Hann window; frame t is centred
    on sample ``t * hop - n_fft // 2``."""
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    extra = (-signals.shape[-1]) % hop
    padded = np.pad(signals, [(0, 0)] * (signals.ndim - 1) + [(n_fft, n_fft + extra)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    return sp_fft.rfft(frames * window, axis=-1)


def _istft(spectra, n_fft, hop, n_samples):
    """Weighted overlap-add inverse of :func:`_stft` (hop must be n_fft / 4)."""
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    frames = sp_fft.irfft(spectra, n_fft, axis=-1) * window
    n_frames = frames.shape[0]
    blocks = frames.reshape(n_frames, 4, hop)
    out = np.zeros((n_frames + 3, hop))
    for j in range(4):
        out[j : j + n_frames] += blocks[:, j]
    return out.reshape(-1)[n_fft : n_fft + n_samples] / 2.0


def _second_order(freq, bandwidth, z_inv, sample_rate):
    """``1 - 2 r cos(theta) z^-1 + r^2 z^-2`` on ``z_inv = (z^-1, z^-2)`` and at DC."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    a1 = -2 * radius * np.cos(2 * np.pi * freq / sample_rate)
    a2 = radius**2
    return 1 + a1 * z_inv[0] + a2 * z_inv[1], 1 + a1 + a2


def _tract_response(voice, formants, n_fft, sample_rate):
    """Complex response [frames, bins] of the vocal tract, unit gain at DC.

    Five cascaded resonators (formants [frames, 5]) and the speaker's fixed
    anti-resonance (a pair of zeros, like the piriform fossa's dip at 4-5 kHz).
    """
    z_inv = np.exp(-2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)
    z_inv = (z_inv, z_inv**2)
    bandwidths = FORMANT_BANDWIDTHS_HZ * voice.bandwidth_scale
    freq = min(voice.antiresonance_hz, 0.95 * sample_rate / 2)
    response, dc_gain = _second_order(freq, voice.antiresonance_bandwidth_hz, z_inv, sample_rate)
    response = response / dc_gain
    for k in range(formants.shape[1]):
        pole, pole_dc = _second_order(formants[:, k : k + 1], bandwidths[k], z_inv, sample_rate)
        response = response * pole_dc / pole
    return response


def _background_noise(session, rng, n_samples, sample_rate):
    """Coloured noise with the session's slope, bumps and hum, slowly fluctuating."""
    n_fast = sp_fft.next_fast_len(n_samples, real=True)
    freqs = np.fft.rfftfreq(n_fast, 1.0 / sample_rate)
    shape = np.maximum(freqs, 50.0) ** (-session.noise_exponent / 2)
    for centre, gain_db, width in session.noise_bumps:
        distance = np.log2(np.maximum(freqs, 1.0) / centre) / width
        shape *= 1 + (10 ** (gain_db / 20) - 1) * np.exp(-0.5 * distance**2)
    noise = sp_fft.irfft(sp_fft.rfft(rng.standard_normal(n_fast)) * shape, n_fast)[:n_samples]
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    times = np.arange(n_samples) / sample_rate
    if session.hum_hz:
        harmonics = np.arange(1, 7)[:, None]
        phases = rng.uniform(0.0, 2 * np.pi, (6, 1))
        hum = np.sum(np.sin(2 * np.pi * session.hum_hz * harmonics * times + phases) / harmonics, 0)
        hum /= np.sqrt(np.mean(hum**2))
        noise = np.sqrt(1 - session.hum_fraction) * noise + np.sqrt(session.hum_fraction) * hum
    return noise * np.clip(1 + 0.3 * _slow_contour(rng, times, 0.1, 1.0), 0.2, None)


def _mean_frame_power(spectra, frame_mask):
    """Mean over the selected frames of the total power of each frame (0 if none)."""
    if not frame_mask.any():
        return 0.0
    return float(np.mean(np.sum(np.abs(spectra[frame_mask]) ** 2, axis=-1)))


def _dry_speech(voice, session, rng, n_samples, sample_rate):
    """The speaker's utterance before room, noise and microphone."""
    n_fft = int(2 ** np.round(np.log2(0.032 * sample_rate)))
    hop = n_fft // 4
    kinds, lengths, vowels, fricatives, levels = _plan_segments(voice, rng, n_samples, sample_rate)
    segment = np.repeat(np.arange(kinds.size), lengths)[:n_samples]
    times = np.arange(n_samples) / sample_rate
    duration = n_samples / sample_rate

    # Excitation: pitch contour with intonation and declination, pulses, aspiration, frication.
    declination = rng.uniform(0.0, 0.15)
    f0 = (
        voice.f0_hz
        * session.f0_factor
        * np.exp(rng.normal(0.0, 0.03))
        * np.exp(voice.f0_spread_semitones * np.log(2) / 12 * _slow_contour(rng, times))
        * (1 - declination * times / duration)
    )
    pulses, phase = _glottal_pulses(f0, rng, voice.jitter, voice.shimmer, sample_rate)
    open_phase = 0.35 + 0.65 * 0.5 * (1 - np.cos(2 * np.pi * phase))
    aspiration = rng.standard_normal(n_samples) * open_phase * voice.breathiness
    aspiration *= np.sqrt(f0 / sample_rate)
    voiced_gate = _smooth(np.where(kinds == VOICED, levels, 0.0)[segment], 0.01 * sample_rate)
    voiced_gate *= np.clip(1 + 0.15 * _slow_contour(rng, times), 0.5, None)
    unvoiced_gate = _smooth(np.where(kinds == UNVOICED, levels, 0.0)[segment], 0.008 * sample_rate)
    frication = rng.standard_normal(n_samples) * unvoiced_gate
    sources = np.stack([pulses * voiced_gate, aspiration * voiced_gate, frication])
    spectra = _stft(sources, n_fft, hop)

    # Frame-level articulation: formant targets held through consonants and pauses.
    n_frames = spectra.shape[1]
    centres = np.clip(np.arange(n_frames) * hop - n_fft // 2, 0, n_samples - 1)
    frame_segment = segment[centres]
    last_vowel_segment = np.maximum.accumulate(np.where(kinds == VOICED, np.arange(kinds.size), 1))
    targets = np.log(voice.vowel_formants[vowels[last_vowel_segment]])[frame_segment]
    smoothing_frames = 0.06 * sample_rate / hop
    formants = np.exp(_smooth(targets.T, smoothing_frames).T)
    formants = np.minimum(formants, 0.95 * sample_rate / 2)
    tract = _tract_response(voice, formants, n_fft, sample_rate)

    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    slope = voice.glottal_slope + session.slope_shift
    glottal = (1 + (freqs / voice.glottal_corner_hz) ** 2) ** (-slope / 2)
    radiation = 1 - 0.97 * np.exp(-2j * np.pi * freqs / sample_rate)
    voiced = tract * (radiation * glottal * spectra[0] + radiation * np.sqrt(glottal) * spectra[1])

    band = FRICATIVE_BANDS_HZ[fricatives[frame_segment]] * voice.fricative_scale
    centre = np.minimum(band[:, :1], 0.45 * sample_rate)
    fricative = (np.exp(-0.5 * ((freqs - centre) / band[:, 1:]) ** 2) + 0.02) * spectra[2]
    voiced_frames = voiced_gate[centres] > 0.5 * np.max(voiced_gate)
    fricative_frames = unvoiced_gate[centres] > 0.5 * max(np.max(unvoiced_gate), 1e-12)
    fricative_power = _mean_frame_power(fricative, fricative_frames)
    if fricative_power > 0:
        ratio = _mean_frame_power(voiced, voiced_frames) / fricative_power
        fricative *= voice.fricative_level * np.sqrt(ratio)
    return _istft(voiced + fricative, n_fft, hop, n_samples)


def synthesize_utterance(voice, session, rng, n_samples, sample_rate=16000):
    """One utterance of ``voice`` recorded in ``session``: float64 waveform, peak < 0.9.

    Arguments
    ---------
    voice : Voice
        The speaker (:func:`draw_voice`).
    session : Session
        The recording conditions (:func:`draw_session`).
    rng : numpy.random.Generator
        Draws the content, the noise and the level.
    n_samples : int
        Length of the result.
    sample_rate : int
        Sampling rate in Hz.

    Example
    -------
    >>> wav = synthesize_utterance(draw_voice(0, 0), draw_session(0, 0, 0),
    ...                            np.random.default_rng(0), 8000)
    >>> wav.shape, bool(0.1 < np.abs(wav).max() < 0.9), bool(np.isfinite(wav).all())
    ((8000,), True, True)
    """
    speech = _dry_speech(voice, session, rng, n_samples, sample_rate)
    speech = fftconvolve(speech, session.room_response)[:n_samples]
    noise = _background_noise(session, rng, n_samples, sample_rate)
    speech_power = np.mean(speech**2)
    noise *= np.sqrt(speech_power / (np.mean(noise**2) * 10 ** (session.snr_db / 10)))
    recording = sosfilt(session.channel_sos, speech + noise)
    peak = min(session.peak * np.exp(rng.normal(0.0, 0.1)), 0.89)
    return recording * (peak / np.max(np.abs(recording)))


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
    rng = np.random.default_rng([seed, _TRIALS_STREAM])
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
            rng = np.random.default_rng([seed, _UTTERANCE_STREAM, speaker_index, k, u])
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


def generate_corpus(
    out_dir,
    n_speakers=40,
    n_test_speakers=10,
    sessions_per_speaker=3,
    utts_per_session=4,
    min_duration=2.0,
    max_duration=5.0,
    sample_rate=16000,
    seed=0,
    n_trials=None,
    trials_name="veri_test2.txt",
    progress=True,
    n_jobs=1,
):
    """Writes (or finds up to date) the synthetic corpus in ``out_dir``.

    Arguments
    ---------
    out_dir : str
        Corpus folder; gets ``wav/``, the trial list and the manifest.
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
    progress : bool
        Show a progress bar on stderr.
    n_jobs : int
        Worker processes (the result does not depend on it).

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
    config = _validated_config(
        {
            "n_speakers": n_speakers,
            "n_test_speakers": n_test_speakers,
            "sessions_per_speaker": sessions_per_speaker,
            "utts_per_session": utts_per_session,
            "min_duration": min_duration,
            "max_duration": max_duration,
            "sample_rate": sample_rate,
            "seed": seed,
            "n_trials": n_trials,
            "trials_name": trials_name,
        }
    )
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
