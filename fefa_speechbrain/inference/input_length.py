"""The shortest input a model can embed, found by trying it.

thin-ResNet34, thin-SEResNet34 and VGG-M pad short inputs internally, so one 25 ms
frame (400 samples at 16 kHz, :data:`~fefa_speechbrain.data.audio.MIN_SAMPLES`) is
enough; ECAPA-TDNN's convolutions need several frames (640 samples at 16 kHz). Rather
than keep a table per backbone and per backend (PyTorch, ONNX Runtime, TorchScript),
:func:`minimum_input_samples` runs the embedder on a few short probes: a dozen forward
passes of under a second of audio. The command line checks every file against that
minimum before any embedding, so a too-short file is named with the minimum duration
instead of failing deep in the model.
"""

import torch

from fefa_speechbrain.data.audio import MIN_SAMPLES

LONGEST_PROBE_SECONDS = 4


def _embeds(embedder, samples, generator):
    wav = 0.1 * torch.randn(1, samples, generator=generator)
    try:
        embedding = embedder.embed(wav, torch.ones(1))
    except Exception:  # torch, ONNX Runtime and TorchScript fail with different types
        return False
    return bool(torch.isfinite(embedding).all())


def minimum_input_samples(embedder, sample_rate=16000):
    """The fewest samples at ``sample_rate`` the embedder turns into a finite embedding.

    Arguments
    ---------
    embedder : SpeakerEmbedder
        Any backend (its ``embed(wavs, lengths)`` is called on one short probe at a time).
    sample_rate : int
        The rate of the probes.

    Returns
    -------
    int : at least :data:`MIN_SAMPLES` (one 25 ms frame at 16 kHz).

    Raises
    ------
    RuntimeError
        When even a probe of several seconds cannot be embedded (a broken model).

    Example
    -------
    >>> from fefa_speechbrain.inference.embedder import SpeakerEmbedder
    >>> from fefa_speechbrain.lobes.features import Spectrogram, FrameNormalization
    >>> from fefa_speechbrain.lobes.wrapper import FEFAWrapper
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> ecapa = ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8, lin_neurons=8)
    >>> modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": FEFAWrapper(ecapa, 257).eval()}
    >>> minimum_input_samples(SpeakerEmbedder(modules))
    640
    """
    generator = torch.Generator().manual_seed(0)
    floor = MIN_SAMPLES * sample_rate // 16000 or 1
    if _embeds(embedder, floor, generator):
        return floor
    low, high = floor, 2 * floor  # low fails; find a high that works
    while not _embeds(embedder, high, generator):
        low, high = high, 2 * high
        if high > LONGEST_PROBE_SECONDS * sample_rate:
            raise RuntimeError(
                f"the model cannot embed even {high / sample_rate:.0f} s of audio: it is broken"
            )
    while high - low > 1:  # bisect: low fails, high works
        middle = (low + high) // 2
        if _embeds(embedder, middle, generator):
            high = middle
        else:
            low = middle
    return high
