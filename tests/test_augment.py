"""Augmentations: RandomChannel and Babble (level, padding, Augmenter) and synthetic RIRs."""

import csv
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.augment.augmenter import Augmenter
from speechbrain.augment.time_domain import AddReverb

from fefa_speechbrain.data.rir import ensure_rir_csv, synthetic_rir, write_synthetic_rirs
from fefa_speechbrain.lobes.augment import Babble, RandomChannel

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


# --------------------------------------------------------------------------- Babble


def test_babble_is_added_at_the_drawn_snr_over_valid_samples():
    torch.manual_seed(0)
    babble = Babble(speaker_count=2, snr_low=5.0, snr_high=5.0)
    wavs = torch.randn(4, 8000) * torch.tensor([[1.0], [0.1], [3.0], [0.5]])
    lengths = torch.tensor([1.0, 0.5, 1.0, 0.75])
    mixed = babble(wavs, lengths)
    for row, length in enumerate((8000, 4000, 8000, 6000)):
        added = mixed[row, :length] - wavs[row, :length]
        snr = 10 * torch.log10(wavs[row, :length].pow(2).mean() / added.pow(2).mean())
        assert float(snr) == pytest.approx(5.0, abs=1e-3)
        assert float(mixed[row, length:].abs().max() if length < 8000 else 0.0) == 0.0


def test_babble_is_made_of_the_next_utterances_of_the_batch():
    babble = Babble(speaker_count=1, snr_low=0.0, snr_high=0.0)
    wavs = _tones([300.0, 1200.0, 2500.0])
    mixed = babble(wavs)
    # utterance 0 gets utterance 1 (1200 Hz), at equal power (0 dB)
    assert float(_amplitude_at(mixed[0], 1200.0)) == pytest.approx(float(_amplitude_at(wavs[1], 1200.0)), rel=1e-3)
    assert float(_amplitude_at(mixed[0], 2500.0)) < 1e-2
    assert float(_amplitude_at(mixed[2], 300.0)) == pytest.approx(float(_amplitude_at(wavs[0], 300.0)), rel=1e-3)


def test_babble_leaves_a_batch_of_one_and_refuses_bad_settings():
    wav = torch.randn(1, 1600)
    assert torch.equal(Babble()(wav), wav)
    with pytest.raises(ValueError, match="speaker_count"):
        Babble(speaker_count=0)
    with pytest.raises(ValueError, match="snr_low <= snr_high"):
        Babble(snr_low=20.0, snr_high=10.0)


# --------------------------------------------------------------------------- synthetic RIRs


def test_synthetic_rir_decays_by_60_db_in_rt60():
    rir = synthetic_rir(0.4, 6.0, SR, np.random.default_rng(1))
    assert len(rir) == round(0.4 * SR) and rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0
    tail = rir[1:].astype(np.float64)
    drr = 10 * np.log10(1.0 / np.sum(tail**2))
    assert drr == pytest.approx(6.0, abs=1e-4)
    window = int(0.02 * SR)  # energy of 20 ms at the start and at 0.3 s: 45 dB apart in theory
    start = np.sum(tail[:window] ** 2)
    later = np.sum(tail[int(0.3 * SR) : int(0.3 * SR) + window] ** 2)
    assert 10 * np.log10(start / later) == pytest.approx(45.0, abs=3.0)


def test_written_rirs_reverberate_through_speechbrain_add_reverb(tmp_path):
    csv_path = tmp_path / "rirs" / "rirs.csv"
    reverb = AddReverb(str(csv_path), clean_sample_rate=SR, reverb_sample_rate=SR)  # reads lazily
    write_synthetic_rirs(str(csv_path), count=4, rt60_range=(0.5, 0.5), seed=3)
    again = tmp_path / "again.csv"
    write_synthetic_rirs(str(again), count=4, rt60_range=(0.5, 0.5), seed=3)
    first, second = (sf.read(str(p.parent / "rir_0002.wav"))[0] for p in (csv_path, again))
    np.testing.assert_array_equal(first, second)  # same seed, same responses
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert [r["ID"] for r in rows] == [f"rir_{i:04d}" for i in range(4)]
    assert all(float(r["duration"]) == pytest.approx(0.5) for r in rows)
    torch.manual_seed(0)
    clean = torch.zeros(2, SR)
    clean[:, 100] = 1.0  # an impulse: its reverberated version is the response itself
    wet = reverb(clean)
    assert wet.shape == clean.shape
    assert float(wet[:, 100 + int(0.2 * SR):].abs().sum()) > 0  # a tail long after the impulse
    assert float(wet[:, :100].abs().max()) < 1e-4  # nothing before the direct path


def test_a_missing_rir_csv_is_synthesized_only_inside_the_prep_folder(tmp_path):
    prep, elsewhere = tmp_path / "prep", tmp_path / "corpora" / "RIRS.csv"
    made = ensure_rir_csv(str(prep / "rirs" / "rirs.csv"), str(prep))
    assert len(list(csv.DictReader(open(made, encoding="utf-8")))) == 200
    assert ensure_rir_csv(made, str(prep)) == made  # present: used as it is
    with pytest.raises(FileNotFoundError, match="rir_csv .*RIRS.csv does not exist"):
        ensure_rir_csv(str(elsewhere), str(prep))
    assert not elsewhere.parent.exists()  # nothing written for a mistyped corpus path
