"""Voice activity: where speech is in a waveform, with Silero VAD.

Silero VAD (MIT licence) ships its model inside its wheel, runs on PyTorch or ONNX
Runtime, and needs no download; ``docs/everyday-audio.md`` has what it was measured to do on
real speech, silence and noise. One function, :func:`speech_regions`, is used by
every path that reads long or doubtful audio.
"""

import functools
import warnings

import torch

SAMPLE_RATE = 16000
BACKENDS = ("pytorch", "onnxruntime")


@functools.lru_cache(maxsize=None)
def _model(backend):
    if backend not in BACKENDS:
        raise ValueError(f"VAD backend {backend!r}: choose one of {BACKENDS}")
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return load_silero_vad(onnx=backend == "onnxruntime")


def speech_regions(wav, sample_rate=SAMPLE_RATE, threshold=0.5, min_speech=0.25,
                   min_silence=0.1, pad=0.03, backend="pytorch"):
    """Speech regions of a mono 16 kHz waveform, as ``[(start, end), ...]`` in samples.

    Arguments
    ---------
    wav : torch.Tensor
        ``[samples]`` at ``sample_rate`` (16000; Silero also takes 8000).
    threshold : float
        Speech probability above which a 32 ms frame is speech (Silero's default 0.5).
    min_speech, min_silence, pad : float
        Shortest speech region kept, shortest pause that splits two regions, and the
        margin added on each side, in seconds.
    backend : str
        "pytorch" (Silero's TorchScript model) or "onnxruntime" (its ONNX graph).

    Example
    -------
    >>> speech_regions(torch.zeros(32000))
    []
    """
    from silero_vad import get_speech_timestamps

    wav = torch.as_tensor(wav, dtype=torch.float32).flatten()
    if wav.numel() < 512:
        return []
    with torch.no_grad():
        found = get_speech_timestamps(
            wav, _model(backend), threshold=threshold, sampling_rate=sample_rate,
            min_speech_duration_ms=int(1000 * min_speech),
            min_silence_duration_ms=int(1000 * min_silence), speech_pad_ms=int(1000 * pad),
        )
    _model(backend).reset_states()
    return [(int(r["start"]), int(r["end"])) for r in found]


def speech_only(wav, regions):
    """The samples of ``regions`` joined, ``[samples]``; empty if there is no region.

    Example
    -------
    >>> speech_only(torch.arange(10.0), [(1, 3), (6, 8)]).tolist()
    [1.0, 2.0, 6.0, 7.0]
    """
    if not regions:
        return wav[:0]
    return torch.cat([wav[start:end] for start, end in regions])


NO_SPEECH_PROBABILITY = 0.2


def speech_probability(wav, backend="pytorch"):
    """Silero's speech probability of every 32 ms frame of a 16 kHz waveform, ``[frames]``."""
    model = _model(backend)
    wav = torch.as_tensor(wav, dtype=torch.float32).flatten()
    frames = wav.numel() // 512
    model.reset_states()
    with torch.no_grad():
        probs = [float(model(wav[i * 512:(i + 1) * 512][None], SAMPLE_RATE)) for i in range(frames)]
    model.reset_states()
    return torch.tensor(probs)


def has_speech(wav, regions=None, backend="pytorch"):
    """Whether a waveform holds speech: a region was found, or a frame's speech
    probability reaches ``NO_SPEECH_PROBABILITY`` (0.2).

    Measured on the 711 clips of the shared Speech Commands test speakers: all but 2 clips
    reach 0.2 (98.9 % reach 0.67), while digital silence and white, pink or brown
    noise at -40 to -10 dBFS stay below 0.04 (``docs/everyday-audio.md``). Short words that
    Silero's 250 ms minimum drops (40 of the 711 clips) still count as speech.

    Example
    -------
    >>> has_speech(torch.zeros(16000)), has_speech(0.1 * torch.randn(16000))
    (False, False)
    """
    if regions is None:
        regions = speech_regions(wav, backend=backend)
    if regions:
        return True
    probs = speech_probability(wav, backend)
    return bool(probs.numel()) and float(probs.max()) >= NO_SPEECH_PROBABILITY
