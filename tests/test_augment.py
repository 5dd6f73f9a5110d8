"""RandomChannel: the gain it applies, padding, level, and SpeechBrain's Augmenter."""

import math

import pytest
import torch
from speechbrain.augment.augmenter import Augmenter

from fefa_speechbrain.lobes.augment import RandomChannel

SR = 16000


def _tones(freqs, seconds=1.0):
    t = torch.arange(int(seconds * SR)) / SR
    return torch.stack([torch.sin(2 * math.pi * f * t) for f in freqs])


def _amplitude_at(wav, freq):
    spectrum = torch.fft.rfft(wav)
    return spectrum.abs()[round(freq * wav.shape[-1] / SR)]


def test_known_gain_curve_scales_each_tone_by_its_gain():
    augment = RandomChannel(SR)
    wav = _tones([500.0]) + _tones([3000.0])  # one signal, two tones
    freqs = torch.fft.rfftfreq(wav.shape[1], d=1 / SR)
    gains = torch.where(freqs < 1500, torch.tensor(6.0), torch.tensor(-6.0))[None]
    out = augment.apply_gains_db(wav, gains)
    ratio_low = _amplitude_at(out[0], 500) / _amplitude_at(wav[0], 500)
    ratio_high = _amplitude_at(out[0], 3000) / _amplitude_at(wav[0], 3000)
    assert float(ratio_low / ratio_high) == pytest.approx(10 ** (12 / 20), rel=1e-3)
    assert float(out.pow(2).sum()) == pytest.approx(float(wav.pow(2).sum()), rel=1e-4)


def test_drawn_gains_stay_within_bounds_and_differ_per_utterance():
    torch.manual_seed(0)
    augment = RandomChannel(SR, max_gain_db=5.0, max_tilt_db=1.0)
    freqs = torch.fft.rfftfreq(16000, d=1 / SR)
    gains = augment.draw_gains_db(8, freqs)
    assert gains.shape == (8, freqs.numel())
    assert gains.abs().max() <= 5.0 and gains.abs().max() > 1.0
    assert not torch.allclose(gains[0], gains[1])
    smooth = (gains[:, 1:] - gains[:, :-1]).abs().max()
    assert smooth < 0.5  # dB between neighbouring 1 Hz bins: a smooth, microphone-like curve


def test_padding_stays_zero_and_valid_part_keeps_its_rms():
    torch.manual_seed(1)
    wavs = torch.randn(3, 8000)
    lengths = torch.tensor([1.0, 0.5, 0.25])
    wavs[1, 4000:] = 0.0
    wavs[2, 2000:] = 0.0
    out = RandomChannel(SR)(wavs, lengths)
    assert out[1, 4000:].abs().max() == 0 and out[2, 2000:].abs().max() == 0
    for row, n in zip(range(3), (8000, 4000, 2000)):
        assert float(out[row, :n].pow(2).mean()) == pytest.approx(
            float(wavs[row, :n].pow(2).mean()), rel=1e-4
        )
    assert not torch.allclose(out[0], wavs[0], atol=1e-3)


def test_works_inside_speechbrain_augmenter():
    torch.manual_seed(2)
    augmenter = Augmenter(concat_original=True, augmentations=[RandomChannel(SR)])
    wavs, lengths = torch.randn(2, 4000), torch.tensor([1.0, 0.5])
    out, out_lengths = augmenter(wavs, lengths)
    assert out.shape == (4, 4000) and torch.equal(out_lengths, torch.cat([lengths, lengths]))
    assert torch.equal(out[:2], wavs)


@pytest.mark.parametrize("kwargs", [{"max_gain_db": -1}, {"low_hz": 500, "high_hz": 100}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        RandomChannel(SR, **kwargs)
