"""The spectrogram front-end's DC removal: what it computes, offsets, padding."""

import torch

from fefa_speechbrain.lobes.features import Spectrogram


def _explicit(wavs, spec):
    """Centred zero-padded frames, each minus its mean under the window, windowed, |rfft|."""
    stft = spec.stft
    n_fft, win, hop = int(stft.n_fft), int(stft.win_length), int(stft.hop_length)
    left = (n_fft - win) // 2
    frames = torch.nn.functional.pad(wavs, (n_fft // 2, n_fft // 2)).unfold(1, n_fft, hop)
    body = frames[..., left:left + win]
    frames = frames.clone()
    frames[..., left:left + win] = body - body.mean(dim=-1, keepdim=True)
    window = torch.zeros(n_fft)
    window[left:left + win] = stft.window
    return torch.log(torch.fft.rfft(frames.double() * window.double()).abs() + spec.eps).float()


def test_remove_dc_is_each_frame_minus_its_mean():
    spec = Spectrogram(log=True, remove_dc=True)
    for samples in (8000, 8103, 8159):  # frame counts of every remainder of the hop
        wavs = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(samples))
        found = spec(wavs)
        expected = _explicit(wavs, spec)[:, :found.shape[1]]
        assert found.shape == expected.shape
        loud = expected > -6  # log magnitudes well above the eps floor
        assert (found - expected)[loud].abs().max() < 1e-3


def test_a_constant_offset_changes_only_the_frames_at_the_ends():
    wav = 0.05 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    plain, blocked = Spectrogram(log=True), Spectrogram(log=True, remove_dc=True)
    moved = (blocked(wav + 0.1) - blocked(wav)).abs().amax(dim=2)[0]
    assert moved[2:-2].max() < 1e-2 and moved[:2].min() > 0.1  # the ends overlap the padding
    assert (plain(wav + 0.1) - plain(wav))[:, 2:-2].abs().max() > 1.0  # without: every frame


def test_remove_dc_padded_equals_unpadded():
    spec = Spectrogram(log=True, remove_dc=True)
    wav = 0.1 * torch.randn(1, 9700, generator=torch.Generator().manual_seed(2)) + 0.05
    padded = torch.nn.functional.pad(wav, (0, 3000))
    frames = spec(wav).shape[1]
    assert torch.allclose(spec(padded)[:, :frames], spec(wav), atol=1e-5)
    valid = torch.round(spec.frame_lengths(torch.tensor([9700 / 12700]), 12700) * spec(padded).shape[1])
    assert int(valid) == frames
