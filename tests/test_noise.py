"""Noise injection at a set SNR: realized SNR, padding, reproducibility, bounds."""
import math

import pytest
import torch

from fefa_speechbrain.evaluation.noise import SNR_LEVELS, add_noise

N_SAMPLES = 16000


def _speechlike_batch(seed=0):
    """Three utterances of different loudness and content, the last two padded."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(N_SAMPLES) / 16000.0
    wavs = torch.stack(
        [
            0.5 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(N_SAMPLES, generator=g),
            0.01 * torch.randn(N_SAMPLES, generator=g),
            2.0 * torch.sin(2 * math.pi * 1000 * t) * torch.sin(2 * math.pi * 3 * t),
        ]
    )
    lengths = torch.tensor([1.0, 0.6, 0.35])
    n_valid = [N_SAMPLES, int(0.6 * N_SAMPLES), int(0.35 * N_SAMPLES)]
    for i, n in enumerate(n_valid):
        wavs[i, n:] = 0.0
    return wavs, lengths, n_valid


def _snr_db(clean, noisy):
    clean, noisy = clean.double(), noisy.double()
    return 10 * math.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
@pytest.mark.parametrize("snr_db", [100, 50, 20, 10, 5, 0, -5])
def test_realized_snr_per_utterance(kind, snr_db):
    wavs, lengths, n_valid = _speechlike_batch()
    g = torch.Generator().manual_seed(1)
    noisy = add_noise(wavs, snr_db, kind=kind, lengths=lengths, generator=g)
    assert noisy.shape == wavs.shape and noisy.dtype == wavs.dtype
    for i, n in enumerate(n_valid):
        assert _snr_db(wavs[i, :n], noisy[i, :n]) == pytest.approx(snr_db, abs=0.01)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_padding_untouched(kind):
    wavs, lengths, n_valid = _speechlike_batch()
    noisy = add_noise(wavs, 0, kind=kind, lengths=lengths)
    for i, n in enumerate(n_valid):
        assert (noisy[i, n:] == 0).all()
        assert (noisy[i, :n] != wavs[i, :n]).float().mean() > 0.99


def test_snr_ignores_padding():
    """Without lengths the padded zeros would count as signal and noise."""
    wavs, lengths, n_valid = _speechlike_batch()
    g = torch.Generator().manual_seed(0)
    unaware = add_noise(wavs, 10, generator=g)
    n = n_valid[2]
    assert abs(_snr_db(wavs[2, :n], unaware[2, :n]) - 10) > 3  # noise spread over the padding


@pytest.mark.parametrize("level", SNR_LEVELS)
def test_every_level_of_the_experiment(level):
    wavs, lengths, n_valid = _speechlike_batch()
    noisy = add_noise(wavs, level, kind="gaussian", lengths=lengths)
    if level == "clean":
        assert noisy is wavs
    else:
        assert _snr_db(wavs[0], noisy[0]) == pytest.approx(level, abs=0.01)


def test_clean_and_none_unchanged():
    wavs, lengths, _ = _speechlike_batch()
    before = wavs.clone()
    assert add_noise(wavs, "clean", lengths=lengths) is wavs
    assert add_noise(wavs, None, kind="uniform") is wavs
    assert torch.equal(wavs, before)


def test_reproducible_with_generator():
    wavs, lengths, _ = _speechlike_batch()
    first = add_noise(wavs, 20, lengths=lengths, generator=torch.Generator().manual_seed(7))
    second = add_noise(wavs, 20, lengths=lengths, generator=torch.Generator().manual_seed(7))
    other = add_noise(wavs, 20, lengths=lengths, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_uniform_noise_bounded():
    wavs, lengths, n_valid = _speechlike_batch()
    snr_db = 5
    uniform = add_noise(wavs, snr_db, kind="uniform", lengths=lengths) - wavs
    gaussian = add_noise(wavs, snr_db, kind="gaussian", lengths=lengths) - wavs
    for i, n in enumerate(n_valid):
        noise_power = wavs[i, :n].double().pow(2).mean() / 10 ** (snr_db / 10)
        bound = math.sqrt(3 * noise_power)  # uniform on [-a, a] has power a^2 / 3
        peak = uniform[i, :n].abs().max().item()
        assert 0.98 * bound < peak < 1.02 * bound
        assert gaussian[i, :n].abs().max().item() > 1.5 * bound


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_zero_mean(kind):
    wavs = torch.ones(1, 200000)
    noise = add_noise(wavs, 0, kind=kind) - wavs
    # Noise power 1: the mean of 200k draws has a standard error of about 0.0022.
    assert abs(noise.mean().item()) < 0.012
    assert noise.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_silent_utterance_gets_no_noise():
    wavs = torch.stack([torch.zeros(N_SAMPLES), torch.randn(N_SAMPLES)])
    noisy = add_noise(wavs, 10)
    assert torch.equal(noisy[0], wavs[0])
    assert _snr_db(wavs[1], noisy[1]) == pytest.approx(10, abs=0.01)


def test_single_waveform_and_float64():
    wav = torch.randn(8000, dtype=torch.float64)
    noisy = add_noise(wav, 30, kind="uniform", lengths=torch.tensor(0.5))
    assert noisy.shape == wav.shape and noisy.dtype == torch.float64
    assert torch.equal(noisy[4000:], wav[4000:])
    assert _snr_db(wav[:4000], noisy[:4000]) == pytest.approx(30, abs=1e-6)


def test_bad_arguments():
    wavs = torch.randn(2, 100)
    with pytest.raises(ValueError, match="kind='pink'"):
        add_noise(wavs, 10, kind="pink")
    with pytest.raises(ValueError, match="snr_db must be a number"):
        add_noise(wavs, "loud")
    with pytest.raises(ValueError, match="finite"):
        add_noise(wavs, float("nan"))
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        add_noise(wavs, 10, lengths=torch.ones(3))
    with pytest.raises(ValueError, match="floating point"):
        add_noise(torch.ones(2, 100, dtype=torch.int16), 10)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        add_noise(torch.randn(2, 1, 100), 10)
    with pytest.raises(ValueError, match="kind"):
        add_noise(wavs, 10, kind="brown")
