"""Recordings: diarization, voice activity and open-set identification on real speech (issue 25).

Simulated conversations are built from real clips, seeded: 2, 3 or 4 speakers, each with 2-3
turns of 1-10 s in a random order (no speaker twice in a row where avoidable), pauses of
0.25-1.5 s between turns, a quarter of the recordings with white noise at 20 dB SNR and a
quarter with babble (4 voices of speakers outside the recording) at 20 dB. Two sources:

- ``words``: Speech Commands; a turn is several 1 s clips of one speaker, each cut to its
  speech, joined back to back;
- ``sentences``: read Persian sentences (``cv_persian_sentences``); a turn is one or more
  sentences of one speaker, each cut to its speech.

Reference (RTTM): every clip is cut to its speech by an energy rule on the clean clip
(:func:`energy_speech`), so the reference never counts a clip's leading or trailing silence
as speech; inside a sentence, pauses of 0.2 s or more are not speech either.

Dev and test never meet: ``--dev`` builds its recordings from the Speech Commands
*training-side* speakers (the shipped model trained on them: see ``docs/recordings.md``) and
from the Persian speakers of the dev half (a seeded split of the 35), with other seeds, and
chooses the window and shift (ours), the affinity pruning and the merge threshold (each
model); the test run reads those choices from ``diarization_dev.json`` and scores the
Speech Commands *test* speakers and the other Persian half.

Scoring: ``pyannote.metrics.diarization.DiarizationErrorRate`` against the whole recording
as the evaluated region. pyannote's ``collar`` is the *total* width removed around every
reference boundary (``collar / 2`` on each side, ``pyannote/metrics/utils.py`` ``uemify``):
the NIST convention of "a 0.25 s collar" (md-eval ``-c 0.25``, 0.25 s each side) is
pyannote's ``collar=0.5``. Both that and no collar are reported (and pyannote's
``collar=0.25``, i.e. 0.125 s each side, in the JSON).

Examples
--------
python benchmarks/bench_diarization.py --quick --dev        # smoke runs
python benchmarks/bench_diarization.py --quick
python benchmarks/bench_diarization.py --dev                # choose the settings
python benchmarks/bench_diarization.py                      # test: diarization + identification
python benchmarks/bench_diarization.py --vad                # voice activity frame error (test clips)
python benchmarks/bench_diarization.py --vad --vad-side dev # the same on the dev side's clips
python benchmarks/bench_diarization.py --long               # 30 minutes: RTF and peak memory
python benchmarks/bench_diarization.py --long --windows-per-batch 16 \
    --output benchmarks/results/diarization_long_batch16    # the same, 16 windows per forward pass

Outputs: ``benchmarks/results/diarization{,_dev,_long}.{md,json}`` and ``vad{,_dev}.{md,json}``
(``_quick`` appended with ``--quick``).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch

import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
SPEECH_COMMANDS = os.path.join(DATA, "speech_commands_v002_test")
PERSIAN = os.path.join(DATA, "cv_persian_sentences")
RESULTS = os.path.join(REPO, "benchmarks", "results")
SHIPPED = os.path.join(REPO, "pretrained", "fefa-ecapa128-speechcommands")
RATE = 16000
FRAME = 160  # 10 ms: the energy rule's frames and the VAD scoring frames

SOURCES = ("words", "sentences")
SPEAKER_COUNTS = (2, 3, 4)
SIDES = {"test": 0, "dev": 1}  # the first number of every recording's seed
NOISES = ("clean", "clean", "white 20 dB", "babble 20 dB")  # cycled over each setting's recordings
SNR_DB = 20.0
BABBLE_VOICES = 4
TURNS_PER_SPEAKER = (2, 3)
TURN_SECONDS = (1.0, 10.0)
PAUSE_SECONDS = (0.25, 1.5)
EDGE_SECONDS = (0.3, 1.0)  # silence before the first and after the last turn
CLIP_LEVEL_DBFS = -26.0  # every cut clip is scaled to this RMS over its speech
FADE_SECONDS = 0.005
MIN_CLIPS = 5  # speakers with fewer clips are not used in recordings
PERSIAN_SPLIT_SEED = 25
PERSIAN_DEV_SPEAKERS = 17  # of 35; the other 18 are the test half

# The energy rule (on the clean clip).
ENERGY_BELOW_PEAK_DB = 30.0
ENERGY_ABOVE_FLOOR_DB = 10.0
ENERGY_FLOOR_PERCENTILE = 10
ENERGY_PAD_SECONDS = 0.02
BRIDGE_SECONDS = {"words": 0.1, "sentences": 1.0}
MIN_PAUSE_SECONDS = 0.2
MIN_CUT_SECONDS = 0.1

WINDOW_GRID = ((1.0, 0.5), (1.5, 0.75), (2.0, 1.0), (3.0, 1.5))
PRUNING_GRID = (0.05, 0.1, 0.15, 0.2, 0.3)
MERGE_GRID = tuple(float(v) for v in np.round(np.arange(0.20, 0.99, 0.01), 2)) + (
    0.992, 0.994, 0.996, 0.998)
COLLARS = {"none": 0.0, "nist_0.25": 0.5, "pyannote_0.25": 0.25}  # name -> pyannote collar
SELECT_COLLAR = "nist_0.25"

VAD_SNRS = (None, 20.0, 10.0, 5.0)  # None: clean, the gaps digital silence
VAD_GAP_SECONDS = (0.3, 2.0)
VAD_CLIPS = {"words": 24, "sentences": 8}
WEBRTC_MODES = (0, 1, 2, 3)
SILERO_THRESHOLDS = (0.5, 0.35, 0.2)  # 0.5: speech_regions' default, what the library uses

LONG_MINUTES = 30.0
LONG_SPEAKERS = 6
ID_SPLITS = 10
ID_ENROL_CLIPS = 3
ID_DEV_SPEAKERS = 40
# The Diarizer's defaults before this benchmark chose them (window, shift, pruning, merge):
# every dev and test run also scores our model at these, for comparison.
FIRST_DEFAULTS = (1.5, 0.75, 0.3, 0.6)


def library_defaults():
    """The Diarizer's current defaults ``(window, shift, pruning, merge_threshold)``."""
    from fefa_speechbrain.inference import diarization

    return (diarization.WINDOW_SECONDS, diarization.SHIFT_SECONDS, diarization.PRUNING,
            diarization.MERGE_THRESHOLD)


# ---------------------------------------------------------------- clips and the energy rule

def frame_levels(wav):
    """Energy of every whole 10 ms frame in dB (``10 log10`` of the mean square)."""
    n = len(wav) // FRAME
    frames = np.asarray(wav[:n * FRAME], dtype=np.float64).reshape(n, FRAME)
    return 10.0 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)


def energy_speech(wav, bridge_seconds=BRIDGE_SECONDS["words"]):
    """Where a clean clip's speech is, by its frame energy: ``(cut, spans)`` in samples.

    The rule: 10 ms frames; a frame is loud if its energy is at least ``max(peak - 30 dB,
    floor + 10 dB)`` (peak: the loudest frame; floor: the 10th percentile of the frames).
    Starting at the loudest frame, the speech grows left and right over loud frames,
    crossing quiet runs of at most ``bridge_seconds`` (0.1 s for words, so a click or a
    breath further away is left out; 1.0 s for sentences, which pause between words).
    ``cut`` is that stretch plus 20 ms each side: the part of the clip that is kept.
    ``spans`` are the speech inside the cut, relative to its start: the loud runs, split
    where a quiet run lasts 0.2 s or more, each padded by 20 ms.

    Example
    -------
    >>> wav = np.zeros(16000, dtype=np.float32)
    >>> wav[4000:8000] = 0.1 * np.sin(np.arange(4000) * 0.3)
    >>> energy_speech(wav)
    ((3680, 8320), [(0, 4640)])
    """
    level = frame_levels(wav)
    n = level.size
    if n == 0:
        return (0, 0), []
    peak_frame = int(np.argmax(level))
    peak = level[peak_frame]
    threshold = min(peak, max(peak - ENERGY_BELOW_PEAK_DB,
                              np.percentile(level, ENERGY_FLOOR_PERCENTILE) + ENERGY_ABOVE_FLOOR_DB))
    loud = level >= threshold
    bridge = int(round(bridge_seconds * RATE / FRAME))

    def grow(step):
        last, quiet, index = peak_frame, 0, peak_frame
        while 0 <= index + step < n:
            index += step
            if loud[index]:
                last, quiet = index, 0
            else:
                quiet += 1
                if quiet > bridge:
                    break
        return last

    first, last = grow(-1), grow(+1)
    pad = int(round(ENERGY_PAD_SECONDS * RATE / FRAME))
    cut_first, cut_end = max(0, first - pad), min(n, last + 1 + pad)
    min_pause = int(round(MIN_PAUSE_SECONDS * RATE / FRAME))
    runs, start, quiet = [], first, 0
    for index in range(first, last + 1):
        if loud[index]:
            if quiet >= min_pause:
                runs.append((start, index - quiet))
                start = index
            quiet = 0
        else:
            quiet += 1
    runs.append((start, last + 1))
    spans = [(max(cut_first, a - pad), min(cut_end, b + pad)) for a, b in runs]
    cut = (cut_first * FRAME, cut_end * FRAME)
    return cut, [((a - cut_first) * FRAME, (b - cut_first) * FRAME) for a, b in spans]


@dataclass
class Clip:
    """One clip cut to its speech: ``audio`` (float32, scaled), ``spans`` (speech, samples)."""

    path: str
    audio: np.ndarray
    spans: list

    @property
    def seconds(self):
        return len(self.audio) / RATE


def prepare_clip(path, wav, bridge_seconds):
    """A :class:`Clip` of a clean 16 kHz waveform: cut, scaled, faded; None if too short."""
    (start, end), spans = energy_speech(wav, bridge_seconds)
    if end - start < MIN_CUT_SECONDS * RATE:
        return None
    audio = np.asarray(wav[start:end], dtype=np.float64)
    speech = np.concatenate([audio[a:b] for a, b in spans])
    audio *= 10 ** (CLIP_LEVEL_DBFS / 20) / max(math.sqrt(np.mean(speech ** 2)), 1e-6)
    fade = min(int(FADE_SECONDS * RATE), len(audio) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        audio[:fade] *= ramp
        audio[-fade:] *= ramp[::-1]
    return Clip(path, np.clip(audio, -1.0, 1.0).astype(np.float32), spans)


def persian_split():
    """(dev, test) halves of the Persian speakers: a seeded split, 17 and 18."""
    speakers = sorted(name for name in os.listdir(PERSIAN) if os.path.isdir(os.path.join(PERSIAN, name)))
    order = np.random.default_rng(PERSIAN_SPLIT_SEED).permutation(len(speakers))
    dev = sorted(speakers[i] for i in order[:PERSIAN_DEV_SPEAKERS])
    return dev, sorted(set(speakers) - set(dev))


def pool_speakers(source, side):
    """The speakers a side uses: Speech Commands test or training-side speakers (at least
    5 clips), or a half of the Persian speakers."""
    if source == "words":
        counts = protocol.clips_per_speaker(SPEECH_COMMANDS)
        test, train = protocol.split_speakers(counts)
        chosen = test if side == "test" else train
        return SPEECH_COMMANDS, [spk for spk in chosen if counts[spk] >= MIN_CLIPS]
    dev, test = persian_split()
    return PERSIAN, test if side == "test" else dev


def load_pool(source, side, max_speakers=None):
    """``{speaker: [Clip, ...]}`` of one source and side (clips in sorted path order)."""
    folder, speakers = pool_speakers(source, side)
    if max_speakers is not None:
        speakers = speakers[:max_speakers]
    pool = {}
    for speaker in speakers:
        clips = []
        for name in sorted(os.listdir(os.path.join(folder, speaker))):
            if not name.lower().endswith(protocol.AUDIO_EXTENSIONS):
                continue
            path = os.path.join(folder, speaker, name)
            wav, rate = sf.read(path, dtype="float32", always_2d=False)
            if rate != RATE or wav.ndim != 1:
                raise ValueError(f"{path}: expected 16 kHz mono, got {rate} Hz, shape {wav.shape}")
            clip = prepare_clip(path, wav, BRIDGE_SECONDS[source])
            if clip is not None:
                clips.append(clip)
        if len(clips) >= (MIN_CLIPS if source == "words" else 2):
            pool[speaker] = clips
    return pool


# ---------------------------------------------------------------- simulated conversations

@dataclass
class Recording:
    """A simulated recording: 16 kHz ``wav``, ``reference`` ``[(start_s, end_s, speaker)]``."""

    uri: str
    wav: np.ndarray
    reference: list
    speakers: list
    noise: str = "clean"
    info: dict = field(default_factory=dict)

    @property
    def seconds(self):
        return len(self.wav) / RATE

    def reference_rttm(self):
        return "".join(f"SPEAKER {self.uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n"
                       for s, e, spk in self.reference)


def _turns_of(clips, rng, max_turn=TURN_SECONDS[1]):
    """A speaker's turns (lists of clips): 2-3 target lengths of 1-10 s (fewer turns if
    the speaker has under 1 s of speech per turn), scaled down to the speech the speaker
    has, each filled with the next clips until it reaches its target (no clip used twice;
    a turn stops before passing 10 s; a later turn left under 1 s joins the one before,
    or is left out)."""
    order = [clips[i] for i in rng.permutation(len(clips))]
    available = sum(clip.seconds for clip in order)
    count = int(rng.choice(TURNS_PER_SPEAKER))
    count = max(1, min(count, int(available // TURN_SECONDS[0])))  # turns of at least 1 s
    targets = rng.uniform(*TURN_SECONDS, size=count)
    if targets.sum() > available:
        targets = np.maximum(targets * available / targets.sum(), TURN_SECONDS[0])
    turns, queue = [], list(order)
    for target in targets:
        turn, seconds = [], 0.0
        while queue and seconds < target and (not turn or seconds + queue[0].seconds <= max_turn):
            clip = queue.pop(0)
            turn.append(clip)
            seconds += clip.seconds
        if not turn:
            continue
        if turns and seconds < TURN_SECONDS[0]:  # a starved last turn: into the one before, or left out
            if sum(c.seconds for c in turns[-1]) + seconds <= max_turn:
                turns[-1] += turn
            continue
        turns.append(turn)
    return turns


def _interleave(turns_by_speaker, rng):
    """Speaker order of the turns: random, never the same speaker twice in a row unless only
    that speaker has turns left."""
    left = {spk: list(turns) for spk, turns in turns_by_speaker.items()}
    order, previous = [], None
    while any(left.values()):
        candidates = [spk for spk, turns in left.items() if turns and spk != previous]
        if not candidates:
            candidates = [spk for spk, turns in left.items() if turns]
        # the speaker with the most turns left is never starved (fewer forced repeats)
        weights = np.array([len(left[spk]) for spk in candidates], dtype=float)
        speaker = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
        order.append((speaker, left[speaker].pop(0)))
        previous = speaker
    return order


def _noise_to_snr(clean, reference_mask, noise, snr_db):
    """``noise`` scaled so that speech power (over the reference) / noise power = SNR."""
    speech_power = float(np.mean(clean[reference_mask].astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-20
    return noise * math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))


def _babble(pool, exclude, length, rng, voices=BABBLE_VOICES):
    """Sum of ``voices`` speakers outside ``exclude``, each their clips end to end (looped)
    to ``length`` samples, each at unit power."""
    others = sorted(set(pool) - set(exclude))
    chosen = [others[i] for i in rng.choice(len(others), min(voices, len(others)), replace=False)]
    total = np.zeros(length)
    for speaker in chosen:
        clips = pool[speaker]
        pieces, size = [], 0
        while size < length:
            clip = clips[int(rng.integers(len(clips)))].audio
            pieces.append(clip)
            size += len(clip)
        voice = np.concatenate(pieces)[:length].astype(np.float64)
        total += voice / math.sqrt(np.mean(voice ** 2) + 1e-20)
    return total


def simulate_conversation(pool, n_speakers, seed, noise="clean", uri="recording",
                          babble_pool=None, speakers=None, turns_by_speaker=None):
    """A seeded conversation of ``n_speakers`` speakers of ``pool`` (``{speaker: [Clip]}``).

    The same ``(pool, n_speakers, seed, noise)`` always gives the same audio and reference.
    ``noise``: "clean", "white 20 dB" or "babble 20 dB" (voices from ``babble_pool``,
    by default ``pool``, never a speaker of the recording).
    """
    rng = np.random.default_rng(seed)
    names = sorted(pool)
    if speakers is None:
        speakers = sorted(names[i] for i in rng.choice(len(names), n_speakers, replace=False))
    if turns_by_speaker is None:
        turns_by_speaker = {spk: _turns_of(pool[spk], rng) for spk in speakers}
    order = _interleave(turns_by_speaker, rng)
    pieces, reference, position = [], [], 0

    def silence(seconds):
        nonlocal position
        samples = int(round(seconds * RATE))
        pieces.append(np.zeros(samples, dtype=np.float32))
        position += samples

    silence(rng.uniform(*EDGE_SECONDS))
    for number, (speaker, turn) in enumerate(order):
        if number:
            silence(rng.uniform(*PAUSE_SECONDS))
        for clip in turn:
            for a, b in clip.spans:
                start, end = position + a, position + b
                if reference and reference[-1][2] == speaker and reference[-1][1] >= start:
                    reference[-1] = (reference[-1][0], end, speaker)
                else:
                    reference.append((start, end, speaker))
            pieces.append(clip.audio)
            position += len(clip.audio)
    silence(rng.uniform(*EDGE_SECONDS))
    clean = np.concatenate(pieces).astype(np.float64)
    mask = np.zeros(clean.size, dtype=bool)
    for start, end, _ in reference:
        mask[start:end] = True
    wav = clean
    if noise.startswith("white"):
        wav = clean + _noise_to_snr(clean, mask, rng.standard_normal(clean.size), SNR_DB)
    elif noise.startswith("babble"):
        babble = _babble(babble_pool or pool, speakers, clean.size, rng)
        wav = clean + _noise_to_snr(clean, mask, babble, SNR_DB)
    elif noise != "clean":
        raise ValueError(f"unknown noise {noise!r}")
    segments = [(s / RATE, e / RATE, spk) for s, e, spk in reference]
    info = {"seed": seed, "turns": len(order),
            "turn_seconds": [round(sum(c.seconds for c in turn), 3) for _, turn in order],
            "speech_seconds": round(float(mask.sum()) / RATE, 3)}
    return Recording(uri, np.clip(wav, -1.0, 1.0).astype(np.float32), segments, list(speakers),
                     noise, info)


def recording_seed(side, source, n_speakers, index):
    """The seed of one recording: different for every side, source, count and index."""
    sequence = np.random.SeedSequence([SIDES[side], SOURCES.index(source), n_speakers, index])
    return int(sequence.generate_state(1)[0])


def build_recordings(pools, side, count):
    """``{(source, n): [Recording]}``: ``count`` per setting, the noise cycling
    clean, clean, white, babble."""
    built = {}
    for source in SOURCES:
        if source not in pools:
            continue
        for n in SPEAKER_COUNTS:
            built[(source, n)] = [
                simulate_conversation(pools[source], n, recording_seed(side, source, n, i),
                                      NOISES[i % len(NOISES)], uri=f"{side}_{source}_{n}spk_{i:03d}")
                for i in range(count)]
    return built


# ---------------------------------------------------------------- scoring

def _annotation(segments, uri):
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=uri)
    for number, (start, end, speaker) in enumerate(segments):
        if end > start:
            annotation[Segment(start, end), number] = speaker
    return annotation


_METRICS = {}


def der_components(reference, hypothesis, seconds, uri="recording"):
    """``{collar name: {missed, false_alarm, confusion, total}}`` in seconds (pyannote).

    The evaluated region is the whole recording ``[0, seconds]``. Needs pyannote.metrics
    (a benchmark dependency, not the package's); tests/test_bench_diarization.py checks it.
    """
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = _annotation(reference, uri), _annotation(hypothesis, uri)
    uem = Timeline([Segment(0.0, seconds)], uri=uri)
    out = {}
    for name, collar in COLLARS.items():
        if name not in _METRICS:
            _METRICS[name] = DiarizationErrorRate(collar=collar, skip_overlap=False)
        parts = _METRICS[name].compute_components(ref, hyp, uem=uem)
        out[name] = {"missed": float(parts["missed detection"]),
                     "false_alarm": float(parts["false alarm"]),
                     "confusion": float(parts["confusion"]), "total": float(parts["total"])}
    return out


def pooled(rows, collar=SELECT_COLLAR):
    """DER and its parts over recordings: summed errors / summed reference speech."""
    total = sum(r[collar]["total"] for r in rows) or 1e-12
    parts = {k: sum(r[collar][k] for r in rows) / total for k in ("missed", "false_alarm", "confusion")}
    return {"der": sum(parts.values()), **parts}


# ---------------------------------------------------------------- the pipeline, in stages

class WindowEncoder:
    """``embed(wavs, lengths)`` (the Diarizer's interface) for a peer that embeds a list of
    numpy clips (``bench_everyday``'s ``Resemblyzer`` and ``MFCCBaseline``)."""

    def __init__(self, peer):
        self.peer = peer

    def embed(self, wavs, lengths):
        width = wavs.shape[1]
        clips = [wavs[row, :max(1, int(round(float(lengths[row]) * width)))].numpy()
                 for row in range(wavs.shape[0])]
        return torch.from_numpy(np.asarray(self.peer.embed(clips), dtype=np.float32))


def window_spans(regions, window, shift):
    """The library's windows (:func:`~fefa_speechbrain.inference.diarization.windows`)."""
    from fefa_speechbrain.inference.diarization import MIN_WINDOW_SECONDS, windows

    return windows(regions, int(round(window * RATE)), int(round(shift * RATE)),
                   int(math.ceil(MIN_WINDOW_SECONDS * RATE)))


def embed_recording(embedder, wav, regions, window, shift):
    """``(spans, embeddings)`` of one recording, as ``Diarizer.__call__`` computes them."""
    from fefa_speechbrain.inference.diarization import Diarizer

    spans = window_spans(regions, window, shift)
    if not spans:
        return spans, np.zeros((0, 0))
    diarizer = Diarizer(embedder, window=window, shift=shift)
    return spans, diarizer.embed_windows(torch.from_numpy(wav), spans)


def hypothesis(spans, labels, regions):
    """``[(start_s, end_s, speaker)]`` from labelled windows (the library's rule)."""
    from fefa_speechbrain.inference.diarization import segments_from_windows

    if not spans:
        return []
    return [(s.start, s.end, s.speaker) for s in segments_from_windows(spans, labels, regions, RATE)]


def merge_sweep(embeddings, pruning, thresholds, max_speakers=8):
    """``{threshold: labels}``: :func:`cluster` without ``num_speakers`` at each merge
    threshold, with the spectral clustering run once (the merges come after it)."""
    from fefa_speechbrain.inference.diarization import (
        _by_first_appearance,
        _merge_close,
        _unit,
        cluster,
    )

    if len(embeddings) <= 2:
        return {t: cluster(embeddings, None, max_speakers, pruning, t) for t in thresholds}
    spectral = cluster(embeddings, None, max_speakers, pruning, merge_threshold=math.inf)
    unit = _unit(embeddings)
    return {t: _by_first_appearance(_merge_close(unit, spectral, t)) for t in thresholds}


def oracle_labels(embeddings, n_speakers, pruning):
    from fefa_speechbrain.inference.diarization import cluster

    if len(embeddings) == 0:
        return np.zeros(0, dtype=int)
    return cluster(embeddings, n_speakers, pruning=pruning)


def silero_regions(recordings, log, backend="pytorch"):
    """Silero's speech regions of every recording (computed once, shared by every model)."""
    from fefa_speechbrain.inference.vad import speech_regions

    start, regions = time.perf_counter(), {}
    for recording in recordings:
        regions[recording.uri] = speech_regions(torch.from_numpy(recording.wav), RATE, backend=backend)
    log(f"voice activity of {len(recordings)} recordings: {time.perf_counter() - start:.0f} s")
    return regions


def score_labelling(recording, spans, labels, regions):
    hyp = hypothesis(spans, labels, regions)
    row = der_components(recording.reference, hyp, recording.seconds, recording.uri)
    row["count"] = len({spk for _, _, spk in hyp})
    return row


def summarize(rows_by_setting, n_by_setting):
    """Per setting: pooled DER (both collars, parts at the NIST collar), count accuracy."""
    out = {}
    for key, rows in rows_by_setting.items():
        n = n_by_setting[key]
        out[key] = {
            "recordings": len(rows),
            "der": pooled(rows)["der"],
            "der_nocollar": pooled(rows, "none")["der"],
            "der_pyannote_collar_0.25": pooled(rows, "pyannote_0.25")["der"],
            **{k: v for k, v in pooled(rows).items() if k != "der"},
            **{f"{k}_nocollar": v for k, v in pooled(rows, "none").items() if k != "der"},
            "count_accuracy": float(np.mean([r["count"] == n for r in rows])),
            "counts": {str(c): int(sum(r["count"] == c for r in rows))
                       for c in sorted({r["count"] for r in rows})},
        }
    return out


# ---------------------------------------------------------------- models

def load_models(names, log):
    """``{name: (window embedder, clip model)}``: ours (the shipped folder), Resemblyzer, MFCC."""
    import bench_everyday

    models = {}
    for name in names:
        start = time.perf_counter()
        if name == "ours":
            model = bench_everyday.OurModel("ours", SHIPPED)
            models[name] = (model.embedder, model)
        elif name == "resemblyzer":
            model = bench_everyday.Resemblyzer()
            models[name] = (WindowEncoder(model), model)
        elif name == "mfcc":
            model = bench_everyday.MFCCBaseline()
            models[name] = (WindowEncoder(model), model)
        else:
            raise ValueError(f"unknown model {name!r}")
        log(f"loaded {name} ({time.perf_counter() - start:.1f} s)")
    return models


MODEL_LABELS = {"ours": "ours (fefa-ecapa128-speechcommands)", "resemblyzer": "Resemblyzer (GE2E, pip)",
                "mfcc": "MFCC mean+std"}


# ---------------------------------------------------------------- dev: choose the settings

def _grid_rows(recordings, spans_emb, regions, pruning, thresholds):
    """Per recording: the score rows of every merge threshold (equal labellings scored
    once) and of the oracle count."""
    by_threshold, oracle = {t: [] for t in thresholds}, []
    for recording in recordings:
        spans, embeddings = spans_emb[recording.uri]
        reg = regions[recording.uri]
        if not spans:
            empty = score_labelling(recording, [], [], reg)
            for t in thresholds:
                by_threshold[t].append(empty)
            oracle.append(empty)
            continue
        cache = {}
        for t, labels in merge_sweep(embeddings, pruning, thresholds).items():
            key = labels.tobytes()
            if key not in cache:
                cache[key] = score_labelling(recording, spans, labels, reg)
            by_threshold[t].append(cache[key])
        oracle.append(score_labelling(recording, spans, oracle_labels(
            embeddings, len(recording.speakers), pruning), reg))
    return by_threshold, oracle


def _choose(grid):
    """The entry with the lowest mean DER over the settings (ties: higher count accuracy;
    merge thresholds still tied at the best window and pruning: the middle one, the
    farthest from either edge of the plateau)."""
    def rank(e):
        return (round(e["mean_der"], 6), -round(e["mean_count_accuracy"], 6))

    best = min(grid, key=rank)
    tied = sorted((e for e in grid if rank(e) == rank(best) and (e["window"], e["shift"], e["pruning"])
                   == (best["window"], best["shift"], best["pruning"])), key=lambda e: e["merge_threshold"])
    return tied[(len(tied) - 1) // 2]


def run_dev(args, log):
    count = args.recordings or (3 if args.quick else 30)
    pools = {source: load_pool(source, "dev", 40 if args.quick and source == "words" else None)
             for source in SOURCES}
    log("dev pools: " + ", ".join(f"{s} {len(p)} speakers, {sum(len(c) for c in p.values())} clips"
                                  for s, p in pools.items()))
    built = build_recordings(pools, "dev", count)
    recordings = [r for rows in built.values() for r in rows]
    regions = silero_regions(recordings, log)
    windows_grid = WINDOW_GRID[1:3] if args.quick else WINDOW_GRID
    prunings = (0.3,) if args.quick else PRUNING_GRID
    models = load_models(args.models, log)
    result = {"mode": "dev", "recordings_per_setting": count, "models": {},
              "audio_hours": sum(r.seconds for r in recordings) / 3600,
              "speech_hours": sum(r.info["speech_seconds"] for r in recordings) / 3600,
              "pools": {s: {"speakers": len(p), "clips": sum(len(c) for c in p.values())}
                        for s, p in pools.items()}}
    chosen_window = library_defaults()[:2]  # if ours is not swept
    for name in args.models:
        embedder = models[name][0]
        grid = []
        windows_here = windows_grid if name == "ours" else [chosen_window]
        for window, shift in windows_here:
            start = time.perf_counter()
            spans_emb = {r.uri: embed_recording(embedder, r.wav, regions[r.uri], window, shift)
                         for r in recordings}
            n_windows = sum(len(s) for s, _ in spans_emb.values())
            log(f"{name} {window}/{shift}: {n_windows} windows embedded in "
                f"{time.perf_counter() - start:.0f} s")
            for pruning in prunings:
                start = time.perf_counter()
                per_setting = {key: _grid_rows(rows, spans_emb, regions, pruning, MERGE_GRID)
                               for key, rows in built.items()}
                n_of = {key: key[1] for key in built}
                for t in MERGE_GRID:
                    summary = summarize({k: v[0][t] for k, v in per_setting.items()}, n_of)
                    grid.append(_grid_entry(window, shift, pruning, t, summary))
                oracle = summarize({k: v[1] for k, v in per_setting.items()}, n_of)
                for entry in grid[-len(MERGE_GRID):]:
                    entry["oracle_mean_der"] = float(np.mean([s["der"] for s in oracle.values()]))
                    entry["oracle"] = {_key(k): {"der": s["der"], "der_nocollar": s["der_nocollar"]}
                                       for k, s in oracle.items()}
                best = _choose(grid[-len(MERGE_GRID):])
                log(f"{name} {window}/{shift} pruning {pruning}: best merge {best['merge_threshold']} "
                    f"mean DER {100 * best['mean_der']:.2f} %, count {100 * best['mean_count_accuracy']:.0f} %, "
                    f"oracle {100 * best['oracle_mean_der']:.2f} % ({time.perf_counter() - start:.0f} s)")
        choice = _choose(grid)
        if name == "ours":
            chosen_window = (choice["window"], choice["shift"])
        result["models"][name] = {
            "label": MODEL_LABELS[name], "chosen": dict(choice),
            "best_per_window_pruning": [dict(_choose([e for e in grid if (e["window"], e["pruning"]) == wp]))
                                        for wp in sorted({(e["window"], e["pruning"]) for e in grid})],
            "merge_curve_at_choice": [
                {"merge_threshold": e["merge_threshold"], "mean_der": e["mean_der"],
                 "mean_count_accuracy": e["mean_count_accuracy"]}
                for e in grid if (e["window"], e["pruning"]) == (choice["window"], choice["pruning"])],
        }
        log(f"{name}: chosen window {choice['window']}/{choice['shift']}, pruning {choice['pruning']}, "
            f"merge {choice['merge_threshold']}: mean DER {100 * choice['mean_der']:.2f} %")
        if name == "ours":
            first = [e for e in grid if (e["window"], e["shift"], e["pruning"], e["merge_threshold"])
                     == FIRST_DEFAULTS]
            result["models"][name]["first_defaults"] = dict(first[0]) if first else None
    return result


def _key(key):
    return f"{key[0]}_{key[1]}spk"


def _grid_entry(window, shift, pruning, threshold, summary):
    return {"window": window, "shift": shift, "pruning": pruning, "merge_threshold": threshold,
            "mean_der": float(np.mean([s["der"] for s in summary.values()])),
            "mean_der_nocollar": float(np.mean([s["der_nocollar"] for s in summary.values()])),
            "mean_count_accuracy": float(np.mean([s["count_accuracy"] for s in summary.values()])),
            "settings": {_key(k): {x: s[x] for x in ("der", "der_nocollar", "missed", "false_alarm",
                                                     "confusion", "count_accuracy")}
                         for k, s in summary.items()}}


def dev_choices(path):
    """``{model: (window, shift, pruning, merge_threshold)}`` from a dev result file."""
    with open(path, encoding="utf-8") as handle:
        dev = json.load(handle)
    return {name: (m["chosen"]["window"], m["chosen"]["shift"], m["chosen"]["pruning"],
                   m["chosen"]["merge_threshold"]) for name, m in dev["models"].items()}


# ---------------------------------------------------------------- test: score the choices

def check_pipeline(embedder, recording, regions, settings):
    """The staged pipeline of this benchmark gives what ``Diarizer.__call__`` gives."""
    from fefa_speechbrain.inference.diarization import Diarizer, cluster

    window, shift, pruning, merge = settings
    direct = Diarizer(embedder, window=window, shift=shift, merge_threshold=merge, pruning=pruning)(
        torch.from_numpy(recording.wav))
    spans, embeddings = embed_recording(embedder, recording.wav, regions, window, shift)
    staged = hypothesis(spans, cluster(embeddings, None, pruning=pruning, merge_threshold=merge), regions)
    same = [(round(s.start, 6), round(s.end, 6), s.speaker) for s in direct] == [
        (round(a, 6), round(b, 6), c) for a, b, c in staged]
    if not same:
        raise RuntimeError(f"the staged pipeline differs from Diarizer on {recording.uri}")
    return True


def run_test(args, log):
    from fefa_speechbrain.inference.diarization import cluster

    count = args.recordings or (3 if args.quick else 60)
    choices = {}
    if os.path.exists(args.dev_result):
        choices = dev_choices(args.dev_result)
    for name in args.models:
        if name not in choices:
            if not args.allow_defaults:
                raise SystemExit(f"no dev choice for {name} in {args.dev_result}: run --dev first "
                                 "(or --allow-defaults to use the library's defaults)")
            choices[name] = library_defaults()
    pools = {source: load_pool(source, "test") for source in SOURCES}
    log("test pools: " + ", ".join(f"{s} {len(p)} speakers, {sum(len(c) for c in p.values())} clips"
                                   for s, p in pools.items()))
    built = build_recordings(pools, "test", count)
    recordings = [r for rows in built.values() for r in rows]
    regions = silero_regions(recordings, log)
    models = load_models(args.models, log)
    result = {"mode": "test", "recordings_per_setting": count, "choices": {}, "models": {},
              "audio_hours": sum(r.seconds for r in recordings) / 3600,
              "speech_hours": sum(r.info["speech_seconds"] for r in recordings) / 3600,
              "turn_seconds": _quantiles([t for r in recordings for t in r.info["turn_seconds"]]),
              "recording_seconds": {_key(k): _quantiles([r.seconds for r in rows]) for k, rows in built.items()},
              "pools": {s: {"speakers": len(p), "clips": sum(len(c) for c in p.values())}
                        for s, p in pools.items()}}
    if "ours" in models:
        result["pipeline_check"] = check_pipeline(models["ours"][0], recordings[0],
                                                  regions[recordings[0].uri], choices["ours"])
        log("the staged pipeline equals Diarizer.__call__ on " + recordings[0].uri)
    variants = [(name, choices[name]) for name in args.models]
    if "ours" in models and tuple(choices["ours"]) != FIRST_DEFAULTS:
        variants.append(("ours_first_defaults", FIRST_DEFAULTS))
    embedded = {}
    for name, settings in variants:
        model = name.split("_first")[0]
        window, shift, pruning, merge = settings
        limit = args.resemblyzer_recordings if model == "resemblyzer" and args.resemblyzer_recordings else count
        subset = {key: rows[:limit] for key, rows in built.items()}
        start = time.perf_counter()
        cache_key = (model, window, shift)
        if cache_key not in embedded:
            embedded[cache_key] = {r.uri: embed_recording(models[model][0], r.wav, regions[r.uri], window, shift)
                                   for rows in subset.values() for r in rows}
        spans_emb = embedded[cache_key]
        seconds_embedding = time.perf_counter() - start
        estimated, oracle = {}, {}
        for key, rows in subset.items():
            estimated[key], oracle[key] = [], []
            for recording in rows:
                spans, embeddings = spans_emb[recording.uri]
                reg = regions[recording.uri]
                labels = cluster(embeddings, None, pruning=pruning, merge_threshold=merge) if spans else []
                estimated[key].append(score_labelling(recording, spans, labels, reg))
                estimated[key][-1]["noise"] = recording.noise
                estimated[key][-1]["uri"] = recording.uri
                oracle[key].append(score_labelling(recording, spans, oracle_labels(
                    embeddings, len(recording.speakers), pruning) if spans else [], reg))
        n_of = {key: key[1] for key in subset}
        by_noise = {}
        for source in SOURCES:
            for noise in sorted(set(NOISES)):
                rows = [r for key, v in estimated.items() if key[0] == source for r in v if r["noise"] == noise]
                if rows:
                    by_noise[f"{source}_{noise}"] = {"recordings": len(rows), **pooled(rows),
                                                     "der_nocollar": pooled(rows, "none")["der"]}
        result["choices"][name] = dict(zip(("window", "shift", "pruning", "merge_threshold"), settings))
        result["models"][name] = {
            "label": MODEL_LABELS[model] + (" at the first defaults" if "_first" in name else ""),
            "settings": result["choices"][name], "recordings_per_setting": limit,
            "embedding_seconds": seconds_embedding,
            "estimated": {_key(k): v for k, v in summarize(estimated, n_of).items()},
            "oracle": {_key(k): v for k, v in summarize(oracle, n_of).items()},
            "by_noise": by_noise,
            "per_recording": {_key(k): [{"uri": r["uri"], "noise": r["noise"], "count": r["count"],
                                         "der": _der(r), "der_nocollar": _der(r, "none")} for r in v]
                              for k, v in estimated.items()},
        }
        e = result["models"][name]["estimated"]
        log(f"{name}: " + "; ".join(f"{k} DER {100 * v['der']:.2f} % count {100 * v['count_accuracy']:.0f} %"
                                    for k, v in e.items()) + f" ({time.perf_counter() - start:.0f} s)")
    if not args.skip_identification:
        result["identification"] = run_identification(models, args, log)
    return result


def _der(row, collar=SELECT_COLLAR):
    parts = row[collar]
    return (parts["missed"] + parts["false_alarm"] + parts["confusion"]) / max(parts["total"], 1e-12)


def _quantiles(values):
    values = np.asarray(values, dtype=float)
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
            "mean": float(values.mean())}


# ---------------------------------------------------------------- open-set identification

def _clips_of(folder, speakers):
    out = {}
    for speaker in speakers:
        names = sorted(n for n in os.listdir(os.path.join(folder, speaker))
                       if n.lower().endswith(protocol.AUDIO_EXTENSIONS))
        out[speaker] = [os.path.join(folder, speaker, n) for n in names]
    return out


def _gallery_class():
    try:
        from fefa_speechbrain.inference.gallery import Gallery
        return Gallery
    except ImportError:
        return None


def open_set_trials(embeddings, clips, seed, gallery_class=None):
    """One seeded split of ``clips`` (``{speaker: [path]}``): half the speakers enrolled
    (3 clips each; the gallery holds the mean of their unit embeddings), the other half
    impostors, never enrolled. Returns ``(best score, right)`` per probe: ``right`` is
    whether the best-scoring enrolled speaker is the probe's own, None for an impostor."""
    rng = np.random.default_rng(seed)
    speakers = sorted(clips)
    order = rng.permutation(len(speakers))
    enrolled = sorted(speakers[i] for i in order[:len(speakers) // 2])
    impostors = sorted(set(speakers) - set(enrolled))
    unit = {p: e / np.linalg.norm(e) for p, e in embeddings.items()}
    enrol, probes = {}, []
    for speaker in enrolled:
        paths = [clips[speaker][i] for i in rng.permutation(len(clips[speaker]))]
        enrol[speaker] = paths[:ID_ENROL_CLIPS]
        probes += [(p, speaker) for p in paths[ID_ENROL_CLIPS:]]
    probes += [(p, None) for speaker in impostors for p in clips[speaker]]
    if gallery_class is not None:
        gallery = gallery_class("benchmark", "bench_diarization")
        for speaker, paths in enrol.items():
            gallery.enrol(speaker, [unit[p] for p in paths], paths)

        def best(vector):
            return gallery.rank(vector, top_k=1)[0]
    else:
        names = sorted(enrol)
        centres = np.stack([np.mean([unit[p] for p in enrol[n]], axis=0) for n in names])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)

        def best(vector):
            scores = centres @ vector
            return names[int(np.argmax(scores))], float(np.max(scores))
    out = []
    for path, truth in probes:
        name, score = best(unit[path])
        out.append((score, None if truth is None else name == truth))
    return out


def open_set_rates(trials, threshold):
    """Rank-1 accuracy of the enrolled probes, their share right *and* accepted (best
    score >= threshold), and the impostors' false-accept rate (best score >= threshold).

    Example
    -------
    >>> open_set_rates([(0.9, True), (0.2, True), (0.7, False), (0.6, None), (0.1, None)], 0.5)
    {'rank1': 0.6666666666666666, 'open_set_accept': 0.3333333333333333, 'impostor_far': 0.5}
    """
    enrolled = [(score, right) for score, right in trials if right is not None]
    impostor = [score for score, right in trials if right is None]
    return {"rank1": float(np.mean([right for _, right in enrolled])),
            "open_set_accept": float(np.mean([right and score >= threshold for score, right in enrolled])),
            "impostor_far": float(np.mean([score >= threshold for score in impostor]))}


def open_set_threshold(trials):
    """The threshold where the impostors' false-accept rate meets the enrolled probes'
    miss rate (not right and accepted): an open-set equal error rate.

    Example
    -------
    >>> open_set_threshold([(0.9, True), (0.8, True), (0.3, None), (0.2, None)])
    0.8
    """
    candidates = sorted({score for score, _ in trials})
    gaps = []
    for t in candidates:
        rates = open_set_rates(trials, t)
        gaps.append((abs(rates["impostor_far"] - (1 - rates["open_set_accept"])), -t, t))
    return min(gaps)[2]


def _dev_trials(clips, seed=7):
    """Every target pair of ``clips`` and as many seeded non-target pairs."""
    rng = np.random.default_rng(seed)
    items = [(p, s) for s in sorted(clips) for p in clips[s]]
    targets = [(a[0], b[0], 1) for i, a in enumerate(items) for b in items[i + 1:] if a[1] == b[1]]
    nontargets = set()
    while len(nontargets) < len(targets):
        i, j = sorted(rng.choice(len(items), 2, replace=False))
        if items[i][1] != items[j][1]:
            nontargets.add((items[i][0], items[j][0], 0))
    return targets + sorted(nontargets)


def run_identification(models, args, log):
    from fefa_speechbrain.evaluation.metrics import compute_eer

    counts = protocol.clips_per_speaker(SPEECH_COMMANDS)
    test, train = protocol.split_speakers(counts)
    test_clips = _clips_of(SPEECH_COMMANDS, test)
    eligible = [s for s in train if counts[s] >= MIN_CLIPS]
    rng = np.random.default_rng(11)
    dev_speakers = sorted(eligible[i] for i in rng.choice(len(eligible), ID_DEV_SPEAKERS, replace=False))
    dev_clips = _clips_of(SPEECH_COMMANDS, dev_speakers)
    trials = _dev_trials(dev_clips)
    paths = sorted({p for c in (test_clips, dev_clips) for v in c.values() for p in v})
    audio = {p: sf.read(p, dtype="float32")[0] for p in paths}
    gallery_class = _gallery_class()
    out = {"test_speakers": len(test_clips), "test_clips": sum(len(v) for v in test_clips.values()),
           "splits": ID_SPLITS, "enrol_clips": ID_ENROL_CLIPS,
           "dev_speakers": len(dev_speakers), "dev_trials": len(trials),
           "gallery": "fefa_speechbrain.inference.gallery.Gallery" if gallery_class else "numpy",
           "models": {}}
    for name, (_, model) in models.items():
        start = time.perf_counter()
        rows = [audio[p] for p in paths]
        vectors = np.concatenate([np.asarray(model.embed(rows[i:i + 64])) for i in range(0, len(rows), 64)])
        embeddings = dict(zip(paths, vectors.astype(np.float64)))
        unit = {p: e / np.linalg.norm(e) for p, e in embeddings.items()}
        scores = np.array([unit[a] @ unit[b] for a, b, _ in trials])
        labels = np.array([lab for _, _, lab in trials])
        dev_eer, dev_threshold = compute_eer(scores, labels)
        dev_open = [t for s in range(ID_SPLITS) for t in open_set_trials(
            {p: embeddings[p] for v in dev_clips.values() for p in v}, dev_clips, 2000 + s, gallery_class)]
        test_splits = [open_set_trials({p: embeddings[p] for v in test_clips.values() for p in v},
                                       test_clips, 1000 + s, gallery_class) for s in range(ID_SPLITS)]
        thresholds = []
        stored = getattr(model, "threshold", None)
        if stored is not None:
            thresholds.append(("stored eer threshold (config.json)", float(stored)))
            far_1pct = _stored_threshold(model, "far_1pct")
            if far_1pct is not None:
                thresholds.append(("stored far_1pct threshold (config.json)", far_1pct))
        else:
            thresholds.append((f"EER threshold on {len(trials)} dev-side trials", float(dev_threshold)))
        thresholds.append(("open-set EER threshold, dev-side splits", float(open_set_threshold(dev_open))))
        rows_out = []
        for source, threshold in thresholds:
            per_split = [open_set_rates(trials_, threshold) for trials_ in test_splits]
            summary = {k: protocol.mean_std([p[k] for p in per_split]) for k in per_split[0]}
            rows_out.append({"threshold": threshold, "threshold_source": source,
                             **{k: {"mean": m, "sd": sd} for k, (m, sd) in summary.items()},
                             "dev_open_set": open_set_rates(dev_open, threshold)})
            log(f"identification {name} at {threshold:.3f} ({source}): rank-1 "
                f"{100 * summary['rank1'][0]:.1f} %, right and accepted {100 * summary['open_set_accept'][0]:.1f} %, "
                f"impostor FAR {100 * summary['impostor_far'][0]:.1f} %")
        out["models"][name] = {"label": MODEL_LABELS[name], "dev_eer": float(dev_eer),
                               "dev_eer_threshold": float(dev_threshold), "rows": rows_out,
                               "enrolled_probes": sum(r is not None for _, r in test_splits[0]),
                               "impostor_probes": sum(r is None for _, r in test_splits[0]),
                               "seconds": time.perf_counter() - start}
    return out


def _stored_threshold(model, name):
    try:
        from fefa_speechbrain.inference.model_source import load_model

        value = load_model(model.path).thresholds.get(name, {}).get("value")
        return None if value is None else float(value)
    except Exception:  # a folder without that threshold
        return None


# ---------------------------------------------------------------- voice activity

def frames_of(segments_samples, n_frames):
    """Boolean ``[n_frames]``: a 10 ms frame is speech if its centre is inside a segment."""
    labels = np.zeros(n_frames, dtype=bool)
    centres = np.arange(n_frames) * FRAME + FRAME // 2
    for start, end in segments_samples:
        labels[(centres >= start) & (centres < end)] = True
    return labels


def webrtc_frames(wav, mode):
    """webrtcvad's decision on every 10 ms frame (16-bit samples, aggressiveness ``mode``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import webrtcvad
    vad = webrtcvad.Vad(mode)
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    n = len(pcm) // FRAME
    return np.array([vad.is_speech(pcm[i * FRAME:(i + 1) * FRAME].tobytes(), RATE) for i in range(n)])


def smooth_frames(labels, min_speech=0.25, min_silence=0.1, pad=0.03):
    """Frame decisions turned into regions by the rules ``speech_regions`` gives Silero:
    pauses under ``min_silence`` filled, regions under ``min_speech`` dropped, ``pad`` added.

    Example
    -------
    >>> smooth_frames(np.array([0] * 10 + [1] * 30 + [0] * 5 + [1] * 2 + [0] * 20, bool)).nonzero()[0][[0, -1]]
    array([ 7, 49])
    """
    frames_per_second = RATE // FRAME
    runs, start = [], None
    for i, value in enumerate(list(labels) + [False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            runs.append([start, i])
            start = None
    merged = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < min_silence * frames_per_second:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    out = np.zeros(len(labels), dtype=bool)
    pad_frames = int(round(pad * frames_per_second))
    for a, b in merged:
        if b - a >= min_speech * frames_per_second:
            out[max(0, a - pad_frames):min(len(labels), b + pad_frames)] = True
    return out


def vad_recording(pool, seed, n_clips):
    """Clips of random speakers joined by 0.3-2.0 s of silence: ``(clean wav, reference
    [(start, end)] samples)``."""
    rng = np.random.default_rng(seed)
    everything = [clip for spk in sorted(pool) for clip in pool[spk]]
    chosen = [everything[i] for i in rng.choice(len(everything), n_clips, replace=False)]
    pieces, reference, position = [], [], 0
    for clip in chosen:
        gap = int(round(rng.uniform(*VAD_GAP_SECONDS) * RATE))
        pieces.append(np.zeros(gap, dtype=np.float32))
        position += gap
        reference += [(position + a, position + b) for a, b in clip.spans]
        pieces.append(clip.audio)
        position += len(clip.audio)
    gap = int(round(rng.uniform(*VAD_GAP_SECONDS) * RATE))
    pieces.append(np.zeros(gap, dtype=np.float32))
    return np.concatenate(pieces), reference


def run_vad(args, log):
    from fefa_speechbrain.inference.vad import speech_regions

    count = args.recordings or (2 if args.quick else 20)
    side = args.vad_side
    pools = {source: load_pool(source, side, 40 if side == "dev" and source == "words" and args.quick else None)
             for source in SOURCES}
    silero = {f"silero {t:g}" + (" (library)" if t == 0.5 else ""): t for t in SILERO_THRESHOLDS}
    systems = list(silero) + [f"webrtcvad {m}" for m in WEBRTC_MODES] + [
        f"webrtcvad {m} + region rules" for m in WEBRTC_MODES]
    totals = {(source, snr, system): np.zeros(4) for source in SOURCES for snr in VAD_SNRS for system in systems}
    seconds = {name: 0.0 for name in silero} | {"webrtcvad": 0.0}
    audio_seconds = 0.0
    for source in SOURCES:
        for index in range(count):
            seed = int(np.random.SeedSequence([2, SIDES[side], SOURCES.index(source), index]).generate_state(1)[0])
            clean, reference = vad_recording(pools[source], seed, VAD_CLIPS[source])
            n_frames = len(clean) // FRAME
            truth = frames_of(reference, n_frames)
            mask = np.zeros(len(clean), dtype=bool)
            for a, b in reference:
                mask[a:b] = True
            noise = np.random.default_rng(seed + 1).standard_normal(len(clean))
            for snr in VAD_SNRS:
                wav = clean if snr is None else np.clip(clean + _noise_to_snr(clean, mask, noise, snr), -1, 1)
                wav = wav.astype(np.float32)
                audio_seconds += len(wav) / RATE
                found = {}
                for system, threshold in silero.items():
                    start = time.perf_counter()
                    found[system] = frames_of(speech_regions(torch.from_numpy(wav), RATE, threshold=threshold),
                                              n_frames)
                    seconds[system] += time.perf_counter() - start
                for mode in WEBRTC_MODES:
                    start = time.perf_counter()
                    raw = webrtc_frames(wav, mode)[:n_frames]
                    seconds["webrtcvad"] += time.perf_counter() - start
                    found[f"webrtcvad {mode}"] = raw
                    found[f"webrtcvad {mode} + region rules"] = smooth_frames(raw)
                for system, hyp in found.items():
                    totals[(source, snr, system)] += [np.sum(truth & ~hyp), np.sum(~truth & hyp),
                                                      truth.sum(), n_frames]
        log(f"vad {source}: {count} recordings x {len(VAD_SNRS)} conditions done")
    table = {}
    for (source, snr, system), (miss, fa, speech, frames) in totals.items():
        table.setdefault(source, {}).setdefault(_snr_name(snr), {})[system] = {
            "frame_error": float((miss + fa) / frames), "miss": float(miss / frames),
            "false_alarm": float(fa / frames), "miss_of_speech": float(miss / speech),
            "false_alarm_of_nonspeech": float(fa / (frames - speech)),
            "speech_share": float(speech / frames), "frames": int(frames)}
    return {"mode": "vad", "side": side, "recordings_per_source": count, "clips_per_recording": VAD_CLIPS,
            "conditions": [_snr_name(s) for s in VAD_SNRS], "systems": systems, "results": table,
            "seconds": seconds, "audio_seconds": audio_seconds}


def _snr_name(snr):
    return "clean" if snr is None else f"white {snr:g} dB"


# ---------------------------------------------------------------- long recordings: speed, memory

def long_recording(minutes=LONG_MINUTES, speakers=LONG_SPEAKERS, seed=30):
    """A ``minutes`` conversation of ``speakers`` Persian test-half speakers: their clips
    reused as often as needed (each turn drawn afresh), turns and pauses as above."""
    pool = load_pool("sentences", "test")
    rng = np.random.default_rng(seed)
    names = sorted(pool)
    chosen = sorted(names[i] for i in rng.choice(len(names), speakers, replace=False))
    turns, seconds, mean_pause = {spk: [] for spk in chosen}, 0.0, sum(PAUSE_SECONDS) / 2
    while seconds < minutes * 60:
        for spk in chosen:
            turn = _turns_of(pool[spk], rng)[0]
            turns[spk].append(turn)
            seconds += sum(clip.seconds for clip in turn) + mean_pause
    recording = simulate_conversation(pool, speakers, seed, "clean", uri="long", speakers=chosen,
                                      turns_by_speaker=turns)
    return recording


def _vm_hwm_mib():
    """This process's peak resident memory so far (VmHWM), MiB; None without /proc."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def long_worker(backend, wav_path, out_path, settings, windows_per_batch=0):
    """One diarization of a long file in this process (run under /usr/bin/time -v);
    ``windows_per_batch`` > 0 replaces the library's ``WINDOWS_PER_BATCH`` (to measure it)."""
    import resource

    torch.set_num_threads(1)
    window, shift, pruning, merge = settings
    timings = {}
    start = time.perf_counter()
    from fefa_speechbrain.data.audio import load_audio
    from fefa_speechbrain.inference import diarization
    from fefa_speechbrain.inference.diarization import Diarizer

    if windows_per_batch > 0:
        diarization.WINDOWS_PER_BATCH = windows_per_batch
    timings["windows_per_batch"] = diarization.WINDOWS_PER_BATCH

    if backend == "pytorch":
        diarizer = Diarizer.from_model(SHIPPED, window=window, shift=shift, pruning=pruning,
                                       merge_threshold=merge)
    else:
        from fefa_speechbrain.graph_export import graph_embedder
        from fefa_speechbrain.inference.model_source import load_model

        model = load_model(SHIPPED)
        graph = os.path.join(os.path.dirname(out_path), "embedding_model.onnx")  # exported by run_long
        diarizer = Diarizer(graph_embedder(model.modules, graph, threads=1), window=window, shift=shift,
                            vad_backend="onnxruntime", pruning=pruning, merge_threshold=merge)
    from fefa_speechbrain.inference.vad import speech_regions

    speech_regions(torch.zeros(RATE), backend=diarizer.vad_backend)  # Silero loaded before the clock
    timings["load_seconds"] = time.perf_counter() - start
    timings["peak_rss_after_load_mib"] = _vm_hwm_mib()
    start = time.perf_counter()
    wav = load_audio(wav_path, sample_rate=RATE)
    timings["read_seconds"] = time.perf_counter() - start
    marks = []
    start = time.perf_counter()
    result = diarizer(wav, progress=lambda done, total: marks.append((time.perf_counter(), done, total)))
    end = time.perf_counter()
    total = end - start
    batches = len(marks)
    per_batch = (marks[-1][0] - marks[0][0]) / max(batches - 1, 1) if batches else 0.0
    timings.update({
        "diarize_seconds": total, "audio_seconds": wav.numel() / RATE, "rtf": total / (wav.numel() / RATE),
        "windows": marks[-1][2] if marks else 0,
        "vad_seconds_approx": (marks[0][0] - start - per_batch) if marks else None,
        "embedding_seconds_approx": (marks[-1][0] - marks[0][0] + per_batch) if marks else None,
        "clustering_seconds": end - marks[-1][0] if marks else None,
        "speakers": len(result.speakers), "speech_seconds": result.speech_seconds,
        "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "segments": [(s.start, s.end, s.speaker) for s in result],
    })
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(timings, handle)


def run_long(args, log):
    choices = dev_choices(args.dev_result) if os.path.exists(args.dev_result) else {}
    settings = choices.get("ours", library_defaults())
    minutes = 3.0 if args.quick else LONG_MINUTES
    recording = long_recording(minutes)
    folder = tempfile.mkdtemp(prefix="diar_long_")
    wav_path = os.path.join(folder, "long.wav")
    sf.write(wav_path, recording.wav, RATE, subtype="PCM_16")
    log(f"long recording: {recording.seconds / 60:.1f} min, {len(recording.speakers)} speakers, "
        f"{recording.info['turns']} turns")
    out = {"mode": "long", "minutes": recording.seconds / 60, "speakers": len(recording.speakers),
           "turns": recording.info["turns"], "speech_seconds": recording.info["speech_seconds"],
           "settings": dict(zip(("window", "shift", "pruning", "merge_threshold"), settings)),
           "windows_per_batch_option": args.windows_per_batch, "backends": {}}
    from fefa_speechbrain.graph_export import export_graph, front_end_bins
    from fefa_speechbrain.inference.model_source import load_model

    model = load_model(SHIPPED)  # the ONNX graph is exported here, once, as a deployment would
    export_graph(model.modules["embedding_model"], os.path.join(folder, "embedding_model.onnx"), "onnx",
                 front_end_bins(model.modules, RATE))
    for backend in ("pytorch", "onnxruntime"):
        out_path = os.path.join(folder, f"{backend}.json")
        command = ["/usr/bin/time", "-v", sys.executable, os.path.abspath(__file__), "--long-worker",
                   backend, wav_path, out_path, *map(str, settings), str(args.windows_per_batch)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with protocol.OtherCpuShare() as other:
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__))
        if done.returncode:
            raise RuntimeError(f"long worker {backend} failed:\n{done.stderr[-3000:]}")
        with open(out_path, encoding="utf-8") as handle:
            timings = json.load(handle)
        rss = [line for line in done.stderr.splitlines() if "Maximum resident set size" in line]
        timings["max_rss_mib"] = int(rss[0].split(":")[1]) / 1024 if rss else None
        timings["others_cpu_share"] = other.share
        segments = timings.pop("segments")
        scored = der_components(recording.reference, segments, recording.seconds, "long")
        timings["der"] = _der(scored)
        timings["der_nocollar"] = _der(scored, "none")
        out["backends"][backend] = timings
        log(f"long {backend}: RTF {timings['rtf']:.4f} ({timings['diarize_seconds']:.0f} s), peak RSS "
            f"{timings['max_rss_mib']:.0f} MiB, {timings['speakers']} speakers found, DER "
            f"{100 * timings['der']:.2f} %, others' CPU {100 * (other.share or 0):.0f} %")
    start = time.perf_counter()  # quality beside the timings: the oracle count, in this process
    import bench_everyday
    from fefa_speechbrain.inference.vad import speech_regions

    embedder = bench_everyday.OurModel("ours", SHIPPED).embedder
    regions = speech_regions(torch.from_numpy(recording.wav), RATE)
    window, shift, pruning, _ = settings
    spans, embeddings = embed_recording(embedder, recording.wav, regions, window, shift)
    row = score_labelling(recording, spans, oracle_labels(embeddings, len(recording.speakers), pruning), regions)
    out["oracle_der"], out["oracle_der_nocollar"] = _der(row), _der(row, "none")
    out["pruning_check"] = {}  # the kept share of neighbours against a speaker's share of windows
    for share in PRUNING_GRID:
        from fefa_speechbrain.inference.diarization import cluster

        labels = cluster(embeddings, None, pruning=share, merge_threshold=settings[3])
        scored = score_labelling(recording, spans, labels, regions)
        out["pruning_check"][str(share)] = {"der": _der(scored), "count": scored["count"]}
    log(f"long: oracle-count DER {100 * out['oracle_der']:.2f} % ({time.perf_counter() - start:.0f} s)")
    return out


# ---------------------------------------------------------------- reports

def machine():
    info = protocol.machine_info()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    model = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    flags = " ".join(line.split(":", 1)[1] for line in lscpu.splitlines() if line.startswith("Flags")).split()
    info["lscpu_model_name"] = model[0] if model else None
    info["avx512"] = sorted(f for f in flags if f.startswith("avx512"))
    info["amx"] = sorted(f for f in flags if f.startswith("amx"))
    info["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return info


def _header(result, title):
    m = result["machine"]
    flags = (f"avx512: {', '.join(m['avx512']) or 'none'}; AMX: {', '.join(m['amx']) or 'none'}")
    return (f"# {title}\n\nCommand: `{result['command']}`  \nMachine: `{m['lscpu_model_name']}` "
            f"(lscpu; {flags}), {m['cpu_count']} CPUs, {m['memory_gib']} GiB, torch {m['torch']}, "
            f"{m['torch_threads']} thread(s); load average at start {m['load_average_at_start']}  \n"
            f"Date (UTC): started {m['date_utc']}, finished {result['finished_utc']}, "
            f"{result['wall_seconds'] / 60:.1f} min\n\n")


COLLAR_NOTE = ("DER with pyannote.metrics 4.2 `DiarizationErrorRate`, the whole recording as the "
               "evaluated region. pyannote's `collar` is the *total* width removed around each "
               "reference boundary (half on each side): the \"0.25 s collar\" column is the NIST "
               "convention (md-eval `-c 0.25`: 0.25 s each side), pyannote `collar=0.5`; "
               "the JSON also has pyannote `collar=0.25` (0.125 s each side).")


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f} %"


def markdown_dev(result):
    lines = [_header(result, "Diarization: the dev sweep (settings chosen here)"), COLLAR_NOTE, "",
             f"{result['recordings_per_setting']} dev recordings per setting (Speech Commands training-side "
             f"speakers; the dev half of the Persian speakers), {result['audio_hours']:.2f} h of audio. "
             "Chosen: the lowest mean DER (0.25 s collar, estimated count) over the six settings.", ""]
    for name, m in result["models"].items():
        c = m["chosen"]
        lines += [f"## {m['label']}", "",
                  f"Chosen: window {c['window']} s / shift {c['shift']} s, pruning {c['pruning']}, merge "
                  f"threshold {c['merge_threshold']}: mean DER {_pct(c['mean_der'])} (no collar "
                  f"{_pct(c['mean_der_nocollar'])}), count accuracy {100 * c['mean_count_accuracy']:.1f} %, "
                  f"oracle-count DER {_pct(c['oracle_mean_der'])}.", ""]
        if m.get("first_defaults"):
            d = m["first_defaults"]
            lines += [f"The Diarizer's first defaults (1.5/0.75, pruning 0.3, merge 0.6): mean DER {_pct(d['mean_der'])}, "
                      f"count accuracy {100 * d['mean_count_accuracy']:.1f} %.", ""]
        lines.append(protocol.markdown_table(
            ["window / shift", "pruning", "best merge", "mean DER", "mean DER no collar", "count acc.",
             "oracle-count DER"],
            [[f"{e['window']} / {e['shift']}", e["pruning"], e["merge_threshold"], _pct(e["mean_der"]),
              _pct(e["mean_der_nocollar"]), f"{100 * e['mean_count_accuracy']:.1f} %", _pct(e["oracle_mean_der"])]
             for e in m["best_per_window_pruning"]]))
        lines += ["", "Per setting at the choice:", "", protocol.markdown_table(
            ["setting", "DER", "DER no collar", "missed", "false alarm", "confusion", "count acc.", "oracle DER"],
            [[k, _pct(s["der"]), _pct(s["der_nocollar"]), _pct(s["missed"]), _pct(s["false_alarm"]),
              _pct(s["confusion"]), f"{100 * s['count_accuracy']:.0f} %", _pct(c["oracle"][k]["der"])]
             for k, s in c["settings"].items()]), ""]
        curve = [e for e in m["merge_curve_at_choice"] if abs(e["merge_threshold"] * 20 - round(e["merge_threshold"] * 20)) < 1e-9
                 or e["merge_threshold"] == c["merge_threshold"]]
        lines += ["Merge threshold at the chosen window and pruning (every 0.05 and the choice):", "",
                  protocol.markdown_table(["merge", "mean DER", "count acc."],
                                          [[e["merge_threshold"], _pct(e["mean_der"]),
                                            f"{100 * e['mean_count_accuracy']:.1f} %"] for e in curve]), ""]
    return "\n".join(lines)


def markdown_test(result):
    lines = [_header(result, "Diarization on simulated conversations of real speech (test speakers)"),
             COLLAR_NOTE, "",
             f"{result['recordings_per_setting']} recordings per setting (peers: see the column), "
             f"{result['audio_hours']:.2f} h of audio, {result['speech_hours']:.2f} h of reference speech; "
             f"turns {result['turn_seconds']['min']:.1f}-{result['turn_seconds']['max']:.1f} s "
             f"(median {result['turn_seconds']['median']:.1f}). Settings from the dev sweep "
             "(`diarization_dev.json`). Pipeline check (staged = `Diarizer.__call__`): "
             f"{result.get('pipeline_check')}.", ""]
    lines.append(protocol.markdown_table(
        ["model", "window / shift", "pruning", "merge", "recordings / setting"],
        [[m["label"], f"{m['settings']['window']} / {m['settings']['shift']}", m["settings"]["pruning"],
          m["settings"]["merge_threshold"], m["recordings_per_setting"]] for m in result["models"].values()]))
    keys = list(next(iter(result["models"].values()))["estimated"])
    lines += ["", "DER, 0.25 s collar (no collar), estimated count; count accuracy:", ""]
    lines.append(protocol.markdown_table(
        ["model"] + keys,
        [[m["label"]] + [f"{_pct(m['estimated'][k]['der'])} ({_pct(m['estimated'][k]['der_nocollar'])}); "
                         f"{100 * m['estimated'][k]['count_accuracy']:.0f} %" for k in keys]
         for m in result["models"].values()]))
    lines += ["", "DER with the oracle number of speakers, 0.25 s collar (no collar):", ""]
    lines.append(protocol.markdown_table(
        ["model"] + keys,
        [[m["label"]] + [f"{_pct(m['oracle'][k]['der'])} ({_pct(m['oracle'][k]['der_nocollar'])})" for k in keys]
         for m in result["models"].values()]))
    lines += ["", "Parts of the DER (0.25 s collar, estimated count): missed / false alarm / confusion:", ""]
    lines.append(protocol.markdown_table(
        ["model"] + keys,
        [[m["label"]] + [f"{_pct(m['estimated'][k]['missed'])} / {_pct(m['estimated'][k]['false_alarm'])} / "
                         f"{_pct(m['estimated'][k]['confusion'])}" for k in keys]
         for m in result["models"].values()]))
    noise_keys = list(next(iter(result["models"].values()))["by_noise"])
    lines += ["", "By noise (all speaker counts pooled), DER 0.25 s collar, estimated count:", ""]
    lines.append(protocol.markdown_table(
        ["model"] + noise_keys,
        [[m["label"]] + [_pct(m["by_noise"][k]["der"]) for k in noise_keys] for m in result["models"].values()]))
    if "identification" in result:
        ident = result["identification"]
        lines += ["", "## Open-set identification (Speech Commands test speakers)", "",
                  f"{ident['test_speakers']} test speakers, {ident['test_clips']} clips; {ident['splits']} seeded "
                  f"splits: half the speakers enrolled with {ident['enrol_clips']} clips each (the mean of the unit "
                  "embeddings), their other clips identified (a probe is accepted when its best cosine reaches the "
                  "threshold); the other half are impostors, never enrolled. "
                  f"Scoring with `{ident['gallery']}`. Dev side: {ident['dev_speakers']} training-side speakers "
                  f"(seeded): the peers' EER threshold on {ident['dev_trials']} of their pairs (every target pair and as "
                  "many non-target pairs), and for every model the open-set EER threshold (impostor false accepts = "
                  "enrolled misses) on 10 splits of them like the test splits. Our model trained on these speakers. "
                  "Mean ± sd over the test splits.", ""]
        lines.append(protocol.markdown_table(
            ["model", "threshold", "rank-1 (enrolled)", "right and accepted", "impostor false accepts",
             "dev-side pair EER"],
            [[m["label"], f"{r['threshold']:.3f} ({r['threshold_source']})",
              f"{100 * r['rank1']['mean']:.1f} ± {100 * r['rank1']['sd']:.1f} %",
              f"{100 * r['open_set_accept']['mean']:.1f} ± {100 * r['open_set_accept']['sd']:.1f} %",
              f"{100 * r['impostor_far']['mean']:.1f} ± {100 * r['impostor_far']['sd']:.1f} %",
              _pct(m["dev_eer"])] for m in ident["models"].values() for r in m["rows"]]))
    return "\n".join(lines)


def markdown_vad(result):
    who = "test speakers" if result["side"] == "test" else "dev side (Speech Commands training-side speakers, the Persian dev half)"
    lines = [_header(result, f"Voice activity: frame error on joined clips ({result['side']})"),
             f"{result['recordings_per_source']} recordings per source: clips of the {who} "
             f"({result['clips_per_recording']['words']} words or {result['clips_per_recording']['sentences']} "
             "sentences, each cut to its speech by the energy rule of `bench_diarization.py`) joined by 0.3-2.0 s "
             "of digital silence; then white noise over the whole recording at the SNR (speech power over the "
             "reference). Frames of 10 ms, a frame is speech if its centre is in the reference. Frame error = "
             "(missed + false-alarm frames) / all frames; cells: error (missed / false alarm, both as shares of "
             "all frames). Silero: `speech_regions` (250 ms shortest speech, 100 ms shortest pause, 30 ms pad) at "
             "its speech-probability threshold (0.5 is its default and the library's). webrtcvad: its raw 10 ms decisions, and the same decisions through the "
             "region rules of `speech_regions`.", ""]
    for source, by_condition in result["results"].items():
        share = next(iter(next(iter(by_condition.values())).values()))["speech_share"]
        lines += [f"## {source} (speech {100 * share:.0f} % of the frames)", ""]
        conditions = list(by_condition)
        lines.append(protocol.markdown_table(
            ["system"] + conditions,
            [[system] + [f"{_pct(by_condition[c][system]['frame_error'])} ({_pct(by_condition[c][system]['miss'])} / "
                         f"{_pct(by_condition[c][system]['false_alarm'])})" for c in conditions]
             for system in result["systems"]]))
        lines.append("")
    lines.append("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
                 + f" (webrtcvad: 4 modes together) for {result['audio_seconds'] / 60:.0f} min of audio.")
    return "\n".join(lines)


def markdown_long(result):
    lines = [_header(result, f"Diarization of a {result['minutes']:.0f}-minute recording: speed and memory"),
             f"One simulated recording of {result['minutes']:.1f} min ({result['speakers']} Persian test-half "
             f"speakers, clips reused, {result['turns']} turns, {result['speech_seconds'] / 60:.1f} min of "
             "speech), diarized once per backend in a fresh process on one thread (`torch.set_num_threads(1)`, "
             "OMP_NUM_THREADS=1, ONNX Runtime sessions of 1 thread; the ONNX graph exported beforehand, as a "
             "deployment would). Peak memory: `/usr/bin/time -v` maximum resident set size of that process; "
             "\"after loading\": its peak (VmHWM) once the model and Silero are loaded, before the audio is read. "
             f"Settings: {result['settings']}; windows per forward pass "
             f"{next(iter(result['backends'].values()))['windows_per_batch']}"
             + (" (set by `--windows-per-batch`, not the library's default)" if result.get("windows_per_batch_option")
                else " (the library's `WINDOWS_PER_BATCH`)") + ".", ""]
    lines.append(protocol.markdown_table(
        ["backend", "RTF", "diarize time", "VAD (approx.)", "embedding (approx.)", "clustering", "windows",
         "peak RSS", "peak RSS after loading", "load", "speakers found", "DER 0.25 s / none", "others' CPU"],
        [[b, f"{t['rtf']:.4f}", f"{t['diarize_seconds']:.0f} s", f"{t['vad_seconds_approx']:.0f} s",
          f"{t['embedding_seconds_approx']:.0f} s", f"{t['clustering_seconds']:.1f} s", t["windows"],
          f"{t['max_rss_mib']:.0f} MiB", f"{t['peak_rss_after_load_mib']:.0f} MiB", f"{t['load_seconds']:.1f} s",
          t["speakers"],
          f"{_pct(t['der'])} / {_pct(t['der_nocollar'])}", f"{100 * (t['others_cpu_share'] or 0):.0f} %"]
         for b, t in result["backends"].items()]))
    lines += ["", f"With the oracle number of speakers ({result['speakers']}), same windows: DER "
              f"{_pct(result.get('oracle_der'))} (no collar {_pct(result.get('oracle_der_nocollar'))}). The clips "
              "repeat (each speaker has 5-20 sentences for about 5 minutes of speech), so these DERs are "
              "optimistic; the RTF and memory are what this recording length costs."]
    if result.get("pruning_check"):
        lines += ["", "Affinity pruning on this recording (estimated count, same embeddings; each speaker has "
                  f"about 1/{result['speakers']} of the windows): "
                  + "; ".join(f"{p}: {c['count']} speakers, DER {_pct(c['der'])}"
                              for p, c in result["pruning_check"].items())]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dev", action="store_true", help="choose the settings on dev recordings")
    mode.add_argument("--vad", action="store_true", help="voice activity frame error")
    mode.add_argument("--long", action="store_true", help="a 30-minute recording: RTF and peak memory")
    mode.add_argument("--long-worker", nargs=8, metavar="ARG", help=argparse.SUPPRESS)
    mode.add_argument("--render", metavar="JSON", help="rewrite the markdown of a result file")
    parser.add_argument("--quick", action="store_true", help="a few recordings (smoke run)")
    parser.add_argument("--recordings", type=int, default=None,
                        help="recordings per setting (default: test 60, dev 30, vad 20 per source)")
    parser.add_argument("--resemblyzer-recordings", type=int, default=None,
                        help="fewer test recordings per setting for Resemblyzer (slowest)")
    parser.add_argument("--models", nargs="+", default=["ours", "resemblyzer", "mfcc"],
                        choices=["ours", "resemblyzer", "mfcc"])
    parser.add_argument("--skip-identification", action="store_true")
    parser.add_argument("--vad-side", choices=["test", "dev"], default="test",
                        help="--vad on the test speakers' clips or on the dev side's")
    parser.add_argument("--allow-defaults", action="store_true",
                        help="test without a dev result: the library's defaults for every model")
    parser.add_argument("--dev-result", default=os.path.join(RESULTS, "diarization_dev.json"))
    parser.add_argument("--windows-per-batch", type=int, default=0,
                        help="--long: windows per forward pass instead of the library's WINDOWS_PER_BATCH")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="output path without extension")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as handle:
            result = json.load(handle)
        writers = {"dev": markdown_dev, "test": markdown_test, "vad": markdown_vad, "long": markdown_long}
        protocol.write_markdown(os.path.splitext(args.render)[0] + ".md", writers[result["mode"]](result))
        return 0
    if args.long_worker:
        backend, wav_path, out_path, *settings, per_batch = args.long_worker
        long_worker(backend, wav_path, out_path, tuple(float(s) for s in settings), int(per_batch))
        return 0
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    if args.dev:
        name = "diarization_dev"
    elif args.vad:
        name = "vad_dev" if args.vad_side == "dev" else "vad"
    else:
        name = "diarization_long" if args.long else "diarization"
    output = args.output or os.path.join(RESULTS, name + ("_quick" if args.quick else ""))
    quick_dev = os.path.join(RESULTS, "diarization_dev_quick.json")
    if args.quick and not args.dev and not os.path.exists(args.dev_result):
        if os.path.exists(quick_dev):
            args.dev_result = quick_dev  # a smoke run after a smoke dev run
        else:
            args.allow_defaults = True
    if args.dev:
        args.models = sorted(set(args.models), key=lambda m: m != "ours")  # ours chooses the window first
    started = time.perf_counter()
    info = machine()

    def log(message):
        print(f"[diarization {time.perf_counter() - started:6.0f} s] {message}", flush=True)

    run = run_dev if args.dev else run_vad if args.vad else run_long if args.long else run_test
    result = {"command": protocol.command_line(), "machine": info, **run(args, log)}
    result["wall_seconds"] = time.perf_counter() - started
    result["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    writer = markdown_dev if args.dev else markdown_vad if args.vad else markdown_long if args.long else markdown_test
    protocol.write_json(output + ".json", result)
    protocol.write_markdown(output + ".md", writer(result))
    print(writer(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
