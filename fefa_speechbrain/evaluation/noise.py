"""Noise at a set signal-to-noise ratio, for the paper's robustness test.

The paper adds Gaussian or uniform noise to the test waveforms, before the spectrogram,
and compares thin-ResNet with and without FEFA at several SNRs (Fig. 3). White noise
says little about real use, so babble (a sum of other speakers' recordings) is a third
kind.

Details: ``docs/reference.md`` (fefa_speechbrain.evaluation.noise).
"""

import numbers

import torch

from fefa_speechbrain.lobes.lengths import absolute_lengths, time_mask
from fefa_speechbrain.checks import check_choice

SNR_LEVELS = ("clean", 100, 50, 20, 10, 5, 0)
WHITE_NOISE_KINDS = ("gaussian", "uniform")  # drawn by add_noise
NOISE_KINDS = WHITE_NOISE_KINDS + ("babble",)  # babble: made by babble_noise from recordings
BABBLE_SPEAKERS = 3


def is_clean(snr_db):
    """True for the "no noise" settings: None or "clean"."""
    return snr_db is None or (isinstance(snr_db, str) and snr_db == "clean")


def _check_snr(snr_db):
    if isinstance(snr_db, bool) or not isinstance(snr_db, numbers.Real):
        raise ValueError(f"snr_db must be a number of decibels, 'clean' or None; got {snr_db!r}")
    if snr_db != snr_db or snr_db in (float("inf"), float("-inf")):
        raise ValueError(f"snr_db must be finite (use 'clean' or None for no noise); got {snr_db}")


def _check_kind(kind):
    check_choice("kind", kind, WHITE_NOISE_KINDS)


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


def add_noise(wavs, snr_db, kind="gaussian", lengths=None, generator=None, noise=None):
    """Adds noise to each utterance at the requested SNR: white noise, or the one given.

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
    noise : torch.Tensor
        Noise of the shape of ``wavs`` to scale and add (``kind`` and ``generator`` are
        then unused), e.g. from :func:`babble_noise`; None draws white noise of ``kind``.

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
    if noise is None:
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
    if noise is None:
        noise = _draw_noise(batch.shape, kind, generator, batch.device)
    elif tuple(noise.shape) != tuple(wavs.shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, wavs {tuple(wavs.shape)}")
    noise = noise.reshape(batch.shape).to(batch.device, torch.float64) * valid
    signal_power = (signal.pow(2) * valid).sum(1) / abs_lens
    raw_noise_power = (noise.pow(2).sum(1) / abs_lens).clamp_min(torch.finfo(torch.float64).tiny)
    target_power = signal_power / 10.0 ** (snr_db / 10.0)
    scale = torch.sqrt(target_power / raw_noise_power)
    noisy = (signal + noise * scale.unsqueeze(1)).to(wavs.dtype)
    return noisy.squeeze(0) if single else noisy


def babble_noise(n_samples, pool, generator, speakers=BABBLE_SPEAKERS):
    """Babble of ``n_samples``: the sum of ``speakers`` recordings drawn from ``pool``.

    Each recording is drawn (without replacement) with ``generator``, scaled to unit
    power, read from a random offset and repeated as needed to fill ``n_samples``.

    Arguments
    ---------
    n_samples : int
        Length of the babble.
    pool : list of torch.Tensor
        Recordings [samples] of other speakers (at least ``speakers``, none silent).
    generator : torch.Generator
        Chooses the recordings and offsets.
    speakers : int
        How many recordings are summed.

    Example
    -------
    >>> pool = [torch.sin(torch.arange(800.0) * f) for f in (0.1, 0.2, 0.3, 0.4)]
    >>> g = torch.Generator().manual_seed(0)
    >>> babble = babble_noise(2000, pool, g, speakers=3)
    >>> babble.shape, bool(babble.abs().max() > 0)
    (torch.Size([2000]), True)
    """
    if len(pool) < speakers:
        raise ValueError(f"babble needs at least {speakers} recordings in the pool, got {len(pool)}")
    picks = torch.randperm(len(pool), generator=generator)[:speakers].tolist()
    babble = torch.zeros(n_samples, dtype=torch.float64)
    for index in picks:
        source = pool[index].to(torch.float64)
        source = source / source.pow(2).mean().sqrt().clamp_min(1e-12)
        offset = int(torch.randint(source.numel(), (1,), generator=generator))
        repeats = -(-(offset + n_samples) // source.numel())
        babble += source.repeat(repeats)[offset : offset + n_samples]
    return babble
