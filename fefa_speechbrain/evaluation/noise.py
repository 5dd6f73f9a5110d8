"""Synthetic noise at a set signal-to-noise ratio, for the paper's robustness test.

The paper adds Gaussian or uniform noise to the test waveforms, before the spectrogram,
and compares thin-ResNet with and without FEFA at several SNRs (Fig. 3).

Details: ``docs/reference.md`` (fefa_speechbrain.evaluation.noise).
"""

import numbers

import torch

from fefa_speechbrain.lobes.lengths import absolute_lengths, time_mask
from fefa_speechbrain.checks import check_choice

SNR_LEVELS = ("clean", 100, 50, 20, 10, 5, 0)
NOISE_KINDS = ("gaussian", "uniform")


def is_clean(snr_db):
    """True for the "no noise" settings: None or "clean"."""
    return snr_db is None or (isinstance(snr_db, str) and snr_db == "clean")


def _check_snr(snr_db):
    if isinstance(snr_db, bool) or not isinstance(snr_db, numbers.Real):
        raise ValueError(f"snr_db must be a number of decibels, 'clean' or None; got {snr_db!r}")
    if snr_db != snr_db or snr_db in (float("inf"), float("-inf")):
        raise ValueError(f"snr_db must be finite (use 'clean' or None for no noise); got {snr_db}")


def _check_kind(kind):
    check_choice("kind", kind, NOISE_KINDS)


def _draw_noise(shape, kind, generator, device):
    """Unit-scale float64 noise of ``shape`` on ``device``, drawn with ``generator``.

    The draw happens on the generator's device (so a CPU generator gives the same noise
    whatever the device of the waveforms) and is then moved to ``device``.
    """
    draw_device = generator.device if generator is not None else device
    if kind == "gaussian":
        noise = torch.randn(shape, generator=generator, device=draw_device, dtype=torch.float64)
    else:
        noise = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float64)
        noise = 2.0 * noise - 1.0
    return noise.to(device)


def add_noise(wavs, snr_db, kind="gaussian", lengths=None, generator=None):
    """Adds white noise to each utterance at the requested SNR.

    Arguments
    ---------
    wavs : torch.Tensor
        Waveforms [batch, samples] or a single one [samples].
    snr_db : float, "clean" or None
        Signal-to-noise ratio in dB (any finite value, negative included); "clean" or
        None returns ``wavs`` itself, unchanged.
    kind : str
        "gaussian" (zero-mean normal) or "uniform" (zero-mean uniform on [-a, a]).
    lengths : torch.Tensor
        Relative lengths [batch] in (0, 1]; None means no padding.
    generator : torch.Generator
        Source of randomness, for reproducible noise; None uses the global generator.

    Returns
    -------
    torch.Tensor
        The noisy waveforms, same shape and dtype as ``wavs``; padded samples and silent
        utterances unchanged.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> wavs = torch.sin(torch.arange(16000.0) / 10).repeat(2, 1)
    >>> noisy = add_noise(wavs, 20, lengths=torch.tensor([1.0, 0.5]), generator=g)
    >>> noise = (noisy - wavs).double()
    >>> snr = 10 * torch.log10(wavs[0].double().pow(2).mean() / noise[0].pow(2).mean())
    >>> round(snr.item(), 3)
    20.0
    >>> bool((noisy[1, 8000:] == wavs[1, 8000:]).all())
    True
    """
    if is_clean(snr_db):
        return wavs
    _check_snr(snr_db)
    _check_kind(kind)
    if not isinstance(wavs, torch.Tensor) or wavs.dim() not in (1, 2):
        shape = tuple(wavs.shape) if isinstance(wavs, torch.Tensor) else type(wavs).__name__
        raise ValueError(f"wavs must be a tensor [batch, samples] or [samples]; got {shape}")
    if not wavs.is_floating_point():
        raise ValueError(f"wavs must be floating point, got dtype {wavs.dtype}")
    single = wavs.dim() == 1
    batch = wavs.unsqueeze(0) if single else wavs
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=batch.device).reshape(-1)
        if lengths.numel() != batch.shape[0]:
            raise ValueError(
                f"lengths has {lengths.numel()} entries for a batch of {batch.shape[0]} waveforms"
            )

    n_samples = batch.shape[1]
    abs_lens = absolute_lengths(lengths, n_samples, batch.shape[0], batch.device)
    valid = time_mask(abs_lens, n_samples).to(torch.float64)

    signal = batch.to(torch.float64)
    noise = _draw_noise(batch.shape, kind, generator, batch.device) * valid
    signal_power = (signal.pow(2) * valid).sum(1) / abs_lens
    raw_noise_power = (noise.pow(2).sum(1) / abs_lens).clamp_min(torch.finfo(torch.float64).tiny)
    target_power = signal_power / 10.0 ** (snr_db / 10.0)
    scale = torch.sqrt(target_power / raw_noise_power)
    noisy = (signal + noise * scale.unsqueeze(1)).to(wavs.dtype)
    return noisy.squeeze(0) if single else noisy
