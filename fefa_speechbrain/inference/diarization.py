"""Who spoke when: voice activity, windows, embeddings, spectral clustering, RTTM.

:class:`Diarizer` is the pipeline, one object with one call from a waveform or a path to
speaker segments; :func:`cluster` is SpeechBrain's spectral clustering with the number
of speakers estimated by the eigengap, then merged while two clusters' centroids are as
close as one speaker's. The defaults (2 s windows every 1 s, rows pruned to 15 %, merge at
0.8) were chosen on simulated conversations of training-side speakers
(``benchmarks/bench_diarization.py --dev``, ``docs/recordings.md``).
"""

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from fefa_speechbrain.atomic import atomic_write_text
from fefa_speechbrain.inference.vad import SAMPLE_RATE, speech_regions

WINDOW_SECONDS = 2.0
SHIFT_SECONDS = 1.0
MIN_WINDOW_SECONDS = 0.25  # Silero's shortest speech region
PRUNING = 0.15  # share of each row of the affinity matrix kept (SpeechBrain's p_val)
MIN_NEIGHBOURS = 6  # at least this many neighbours kept per row on short recordings
MERGE_THRESHOLD = 0.8  # clusters whose centroids are closer than this are one speaker
MAX_SPEAKERS = 8
WINDOWS_PER_BATCH = 16  # windows per forward pass: a 30-min recording in 930 MiB (64: 1.3 GiB)


@dataclass(frozen=True)
class Segment:
    """One speaker turn: ``start`` and ``end`` in seconds, the ``speaker`` label."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self):
        return self.end - self.start


def windows(regions, window, shift, min_window):
    """``(start, end)`` sample windows covering each speech region.

    A region longer than ``window`` gets windows every ``shift`` samples, the last one
    ending at the region's end; a shorter one is one window, if at least ``min_window``.

    Example
    -------
    >>> windows([(0, 250), (400, 450)], window=100, shift=50, min_window=60)
    [(0, 100), (50, 150), (100, 200), (150, 250)]
    """
    found = []
    for start, end in regions:
        length = end - start
        if length <= window:
            if length >= min_window:
                found.append((start, end))
            continue
        starts = list(range(start, end - window, shift)) + [end - window]
        found.extend((s, s + window) for s in starts)
    return found


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cluster(embeddings, num_speakers=None, max_speakers=MAX_SPEAKERS, pruning=PRUNING,
            merge_threshold=MERGE_THRESHOLD, seed=0):
    """Speaker labels ``[n]`` (0, 1, ... by first appearance) of ``[n, dim]`` embeddings.

    SpeechBrain's unnormalized spectral clustering (``Spec_Clust_unorm``: cosine
    affinity, row pruning, Laplacian, eigengap) gives ``num_speakers`` clusters, or
    estimates at most ``max_speakers``; without ``num_speakers``, the two clusters with
    the closest centroids are then merged while their cosine is at least
    ``merge_threshold``, so one speaker can come out (the eigengap never says 1).
    k-means is seeded: the same embeddings always get the same labels.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 16))
    >>> X = np.stack([a + 0.1 * rng.normal(size=16) for _ in range(6)]
    ...              + [b + 0.1 * rng.normal(size=16) for _ in range(6)])
    >>> cluster(X).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    >>> cluster(X[:6]).tolist()
    [0, 0, 0, 0, 0, 0]
    """
    from sklearn.cluster import k_means
    from speechbrain.integrations.alignment.diarization import Spec_Clust_unorm

    unit = _unit(embeddings)
    n = unit.shape[0]
    if num_speakers is not None and num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if n == 0:
        return np.zeros(0, dtype=int)
    if n <= 2 or num_speakers == 1:
        labels = np.zeros(n, dtype=int)
        if n == 2 and num_speakers != 1 and unit[0] @ unit[1] < merge_threshold:
            labels[1] = 1
        return labels
    k_max = max(2, min(max_speakers, n - 1))
    spectral = Spec_Clust_unorm(min_num_spkrs=2, max_num_spkrs=k_max)
    affinity = spectral.get_sim_mat(unit)
    keep = max(pruning, min(1.0, MIN_NEIGHBOURS / n))
    affinity = spectral.p_pruning(affinity, keep)
    affinity = 0.5 * (affinity + affinity.T)
    oracle = None if num_speakers is None else min(num_speakers, n)
    spectral_embeddings, k = spectral.get_spec_embs(spectral.get_laplacian(affinity), oracle)
    # SpeechBrain's cluster_embs runs k-means unseeded: seeded here, so labels repeat
    _, labels, _ = k_means(spectral_embeddings, k, random_state=seed, n_init=10)
    if num_speakers is None:
        labels = _merge_close(unit, labels, merge_threshold)
    return _by_first_appearance(labels)


def _merge_close(unit, labels, threshold):
    """Merges the two clusters with the closest centroids while their cosine >= threshold."""
    labels = labels.copy()
    while True:
        names = np.unique(labels)
        if names.size < 2:
            return labels
        centroids = _unit(np.stack([unit[labels == name].mean(axis=0) for name in names]))
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[i, j] < threshold:
            return labels
        labels[labels == names[j]] = names[i]


def _by_first_appearance(labels):
    order = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=int)


def segments_from_windows(spans, labels, regions, sample_rate=SAMPLE_RATE):
    """Speaker segments from labelled windows: inside each speech region, the time
    between two window centres is split at its midpoint; turns of one speaker joined.

    Example
    -------
    >>> spans = [(0, 100), (50, 150), (100, 200)]
    >>> [(s.start, s.end, s.speaker) for s in segments_from_windows(
    ...     spans, [0, 0, 1], [(0, 200)], sample_rate=100)]
    [(0.0, 1.25, 'SPEAKER_00'), (1.25, 2.0, 'SPEAKER_01')]
    """
    segments = []
    for start, end in regions:
        inside = [(s, e, label) for (s, e), label in zip(spans, labels) if s >= start and e <= end]
        if not inside:
            continue
        centres = [(s + e) / 2 for s, e, _ in inside]
        bounds = [start] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [end]
        for index, (_, _, label) in enumerate(inside):
            speaker = f"SPEAKER_{int(label):02d}"
            begin, finish = bounds[index] / sample_rate, bounds[index + 1] / sample_rate
            if segments and segments[-1].speaker == speaker and segments[-1].end >= begin - 1e-9:
                segments[-1] = Segment(segments[-1].start, finish, speaker)
            else:
                segments.append(Segment(begin, finish, speaker))
    return segments


class Diarization(list):
    """The segments of one recording (a list of :class:`Segment`), with its ``uri``."""

    def __init__(self, segments, uri="recording", speech_seconds=0.0):
        super().__init__(segments)
        self.uri = uri
        self.speech_seconds = speech_seconds

    @property
    def speakers(self):
        return sorted({segment.speaker for segment in self})

    def to_rttm(self):
        """The segments as RTTM lines (NIST's format, read by pyannote.metrics and dscore)."""
        return "".join(
            f"SPEAKER {self.uri} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n"
            for s in self
        )

    def write_rttm(self, path):
        """Writes :meth:`to_rttm` to ``path`` atomically."""
        atomic_write_text(path, self.to_rttm())


def rttm_uri(path):
    """The RTTM file id of an audio path: its name without extension, whitespace as ``_``.

    Example
    -------
    >>> rttm_uri("/data/team call.wav")
    'team_call'
    """
    return re.sub(r"\s+", "_", os.path.splitext(os.path.basename(str(path)))[0]) or "recording"


class Diarizer:
    """Speaker diarization of recordings with a speaker-embedding model.

    Voice activity (Silero), windows of ``window`` seconds every ``shift`` seconds
    inside the speech, their embeddings (``WINDOWS_PER_BATCH`` windows per forward pass,
    so memory does not grow with the recording), then :func:`cluster`.

    Arguments
    ---------
    embedder : object
        Has ``embed(wavs, lengths) -> [batch, dim]``: a ``SpeakerEmbedder`` on any
        backend, or any other encoder of 16 kHz waveforms.
    window, shift : float
        Window length and shift in seconds.
    vad_backend : str
        "pytorch" or "onnxruntime" (Silero's ONNX graph).
    merge_threshold : float
        See :func:`cluster`.

    Example
    -------
    >>> class Energy:  # a stand-in encoder: louder windows point elsewhere
    ...     def embed(self, wavs, lengths):
    ...         level = wavs.abs().mean(dim=1, keepdim=True)
    ...         return torch.cat([torch.cos(20 * level), torch.sin(20 * level)], dim=1)
    >>> wav = torch.zeros(32000)
    >>> Diarizer(Energy())(wav)
    []
    """

    def __init__(self, embedder, window=WINDOW_SECONDS, shift=SHIFT_SECONDS,
                 vad_backend="pytorch", merge_threshold=MERGE_THRESHOLD, pruning=PRUNING,
                 min_window=MIN_WINDOW_SECONDS, sample_rate=SAMPLE_RATE):
        if not 0 < shift <= window:
            raise ValueError(f"need 0 < shift <= window, got shift {shift}, window {window}")
        self.embedder = embedder
        self.window, self.shift, self.min_window = window, shift, min_window
        self.vad_backend = vad_backend
        self.merge_threshold = merge_threshold
        self.pruning = pruning
        self.sample_rate = sample_rate

    @classmethod
    def from_model(cls, model, backend="pytorch", device="cpu", trust=False, **kwargs):
        """A Diarizer of a training run, pretrained folder or hub id (``load_model``)."""
        from fefa_speechbrain.inference.embedder import SpeakerEmbedder
        from fefa_speechbrain.inference.model_source import load_model

        loaded = load_model(model, device=device, trust=trust)
        return cls(SpeakerEmbedder(loaded.modules, device=device), vad_backend=backend, **kwargs)

    def embed_windows(self, wav, spans, progress=None):
        """``[len(spans), dim]`` embeddings of the windows, a batch at a time."""
        out = []
        for first in range(0, len(spans), WINDOWS_PER_BATCH):
            batch = spans[first:first + WINDOWS_PER_BATCH]
            longest = max(end - start for start, end in batch)
            wavs = torch.zeros(len(batch), longest)
            for row, (start, end) in enumerate(batch):
                wavs[row, :end - start] = wav[start:end]
            lengths = torch.tensor([(end - start) / longest for start, end in batch])
            out.append(torch.as_tensor(self.embedder.embed(wavs, lengths)).float().cpu())
            if progress is not None:
                progress(min(first + WINDOWS_PER_BATCH, len(spans)), len(spans))
        return torch.cat(out).numpy() if out else np.zeros((0, 0))

    def __call__(self, audio, num_speakers=None, max_speakers=MAX_SPEAKERS, uri=None,
                 progress=None):
        """Diarizes one recording.

        Arguments
        ---------
        audio : str, os.PathLike or torch.Tensor
            A file (any format soundfile reads; resampled, down-mixed) or a 16 kHz
            waveform ``[samples]``.
        num_speakers : int or None
            The number of speakers if known; else it is estimated, at most
            ``max_speakers``.
        uri : str or None
            The recording's RTTM id (the file name without extension by default).
        progress : callable or None
            Called as ``progress(done, total)`` windows while embedding.

        Returns
        -------
        Diarization
            Segments in time order, speakers ``SPEAKER_00``, ... by first appearance.
        """
        if isinstance(audio, (str, os.PathLike)):
            from fefa_speechbrain.data.audio import load_audio

            uri = uri or rttm_uri(audio)
            wav = load_audio(audio, sample_rate=self.sample_rate)
        else:
            wav = torch.as_tensor(audio, dtype=torch.float32).flatten()
        uri = uri or "recording"
        regions = speech_regions(wav, self.sample_rate, backend=self.vad_backend)
        rate = self.sample_rate
        spans = windows(regions, int(round(self.window * rate)), int(round(self.shift * rate)),
                        int(math.ceil(self.min_window * rate)))
        speech = sum(end - start for start, end in regions) / rate
        if not spans:
            return Diarization([], uri, speech)
        embeddings = self.embed_windows(wav, spans, progress)
        labels = cluster(embeddings, num_speakers, max_speakers, self.pruning, self.merge_threshold)
        return Diarization(segments_from_windows(spans, labels, regions, rate), uri, speech)
