"""Audio reading and the bad-audio policy (fefa_speechbrain.data.audio)."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from fefa_speechbrain.data.audio import (
    AudioError,
    inspect_audio,
    load_audio,
    resampled_length,
)


def _noise(n, scale=0.1, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (scale * rng.standard_normal(shape)).astype("float32")


def _write(path, data, rate=16000, subtype=None):
    sf.write(str(path), data, rate, subtype=subtype)
    return str(path)


def _corrupt_flac(path):
    """A FLAC file whose header is intact but whose frames are garbage."""
    _write(path, _noise(48000))
    raw = bytearray(open(path, "rb").read())
    for i in range(2000, len(raw) - 100, 7):
        raw[i] ^= 0x5A
    open(path, "wb").write(bytes(raw))
    return str(path)


def _clipped(n=16000):
    data = _noise(n)
    data[1000:1112] = 1.0  # 112 of 16000 samples = 0.7% at full scale
    return data


def _bad_files(folder):
    """name -> (path, expected action, expected start of the first reason)."""
    folder = str(folder)
    junk = os.path.join(folder, "junk.wav")
    open(junk, "wb").write(os.urandom(2000))
    zero_bytes = os.path.join(folder, "zero_bytes.wav")
    open(zero_bytes, "wb").close()
    m4a = os.path.join(folder, "vox2.m4a")
    open(m4a, "wb").write(b"\x00\x00\x00\x20ftypM4A ")
    nan = _noise(16000)
    nan[500] = np.nan
    return {
        "junk": (junk, "skip", "unreadable"),
        "zero_bytes": (zero_bytes, "skip", "empty"),
        "no_frames": (_write(os.path.join(folder, "no_frames.wav"), np.zeros(0)), "skip", "empty"),
        "short": (_write(os.path.join(folder, "short.wav"), _noise(100)), "skip", "too short"),
        "nan": (
            _write(os.path.join(folder, "nan.wav"), nan, subtype="FLOAT"),
            "skip",
            "contains NaN",
        ),
        "silent": (_write(os.path.join(folder, "silent.wav"), np.zeros(16000)), "skip", "silent"),
        "corrupt": (_corrupt_flac(os.path.join(folder, "corrupt.flac")), "skip", "corrupt"),
        "m4a": (m4a, "skip", m4a + ": m4a/aac audio cannot be read"),
        "stereo": (
            _write(os.path.join(folder, "stereo.wav"), _noise(16000, channels=2)),
            "convert",
            "2 channels",
        ),
        "rate8k": (
            _write(os.path.join(folder, "rate8k.wav"), _noise(8000), rate=8000),
            "convert",
            "sample rate 8000 Hz",
        ),
        "clipped": (
            _write(os.path.join(folder, "clipped.wav"), _clipped(), subtype="FLOAT"),
            "keep",
            "clipped",
        ),
        "clean": (_write(os.path.join(folder, "clean.wav"), _noise(16000)), "keep", None),
    }


def test_inspect_applies_the_policy_to_every_kind_of_file(tmp_path):
    for name, (path, action, reason) in _bad_files(tmp_path).items():
        info = inspect_audio(path)
        assert info.path == path
        assert info.action == action, (name, info)
        assert info.ok == (action != "skip"), name
        if reason is None:
            assert info.reasons == [], name
        else:
            assert info.reasons[0].startswith(reason), (name, info.reasons)


def test_inspect_reports_header_fields_and_clipping_amount(tmp_path):
    files = _bad_files(tmp_path)
    info = inspect_audio(files["stereo"][0])
    assert (info.sample_rate, info.channels, info.frames, info.duration) == (16000, 2, 16000, 1.0)
    info = inspect_audio(files["rate8k"][0])
    assert (info.sample_rate, info.frames, info.duration) == (8000, 8000, 1.0)
    assert inspect_audio(files["clipped"][0]).reasons == [
        "clipped: 0.70% of samples at full scale (|x| >= 0.999)"
    ]
    both = _write(tmp_path / "both.wav", _noise(8000, channels=3), rate=8000)
    reasons = inspect_audio(both).reasons
    assert reasons[0].startswith("3 channels") and reasons[1].startswith("sample rate 8000")


def test_min_samples_is_counted_at_the_target_rate(tmp_path):
    kept = _write(tmp_path / "a.wav", _noise(250), rate=8000)  # 500 samples at 16 kHz
    short = _write(tmp_path / "b.wav", _noise(150), rate=8000)  # 300 samples at 16 kHz
    assert inspect_audio(kept).action == "convert"
    assert inspect_audio(short).reasons == [
        "too short: 300 samples at 16000 Hz < 400 (one 25 ms frame)"
    ]
    assert inspect_audio(short, min_samples=300).action == "convert"


def test_header_only_misses_content_problems_that_load_audio_then_reports(tmp_path):
    files = _bad_files(tmp_path)
    for name in ("nan", "silent", "corrupt", "clipped"):
        info = inspect_audio(files[name][0], full=False)
        assert info.ok and info.reasons == [], name
    for name in ("junk", "zero_bytes", "no_frames", "short", "m4a"):
        assert inspect_audio(files[name][0], full=False).action == "skip", name
    assert inspect_audio(files["stereo"][0], full=False).action == "convert"
    for name, problem in [
        ("nan", "contains NaN or infinite samples"),
        ("corrupt", "corrupt audio"),
        ("junk", "unreadable audio"),
        ("zero_bytes", "empty audio file"),
        ("no_frames", "empty audio file"),
        ("m4a", "ffmpeg -i"),
    ]:
        path = files[name][0]
        with pytest.raises(AudioError) as caught:
            load_audio(path)
        assert path in str(caught.value) and problem in str(caught.value), name
    assert issubclass(AudioError, ValueError)


def test_m4a_message_gives_the_conversion_command(tmp_path):
    path = str(tmp_path / "id00012" / "00001.m4a")
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    stem = path[: -len(".m4a")]
    assert f"ffmpeg -i {path} -ac 1 -ar 16000 {stem}.wav" in str(caught.value)


def test_load_native_rate_segments_are_exact(tmp_path):
    data = _noise(20000)
    path = _write(tmp_path / "a.wav", data, subtype="FLOAT")
    full = load_audio(path)
    assert full.dtype == torch.float32 and full.shape == (20000,)
    assert torch.equal(full, torch.from_numpy(data))
    assert torch.equal(load_audio(path, 1234, 5678), torch.from_numpy(data[1234:5678]))
    assert torch.equal(load_audio(path, 19000, 30000), torch.from_numpy(data[19000:]))


def test_load_downmixes_by_averaging(tmp_path):
    data = _noise(4000, channels=3)
    path = _write(tmp_path / "multi.wav", data, subtype="FLOAT")
    expected = torch.from_numpy(data).mean(dim=1)
    assert torch.allclose(load_audio(path), expected, atol=1e-7)
    assert torch.allclose(load_audio(path, 10, 20), expected[10:20], atol=1e-7)


def test_resampling_keeps_the_frequency(tmp_path):
    t = np.arange(8000) / 8000
    sine = 0.5 * np.sin(2 * np.pi * 1000 * t)
    path = _write(tmp_path / "sine8k.wav", sine, rate=8000, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.shape == (16000,)
    spectrum = torch.fft.rfft(wav).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins over a 1 s signal
    t16 = torch.arange(16000, dtype=torch.float64) / 16000
    reference = 0.5 * torch.sin(2 * np.pi * 1000 * t16)
    middle = slice(1000, 15000)  # away from the zero-padded edges
    assert torch.allclose(wav[middle].double(), reference[middle], atol=2e-3)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_segment_of_resampled_file_equals_slice_of_whole(tmp_path, rate):
    data = _noise(rate * 2 + 37, seed=rate)
    path = _write(tmp_path / f"a{rate}.wav", data, rate=rate, subtype="FLOAT")
    whole = torchaudio.functional.resample(torch.from_numpy(data), rate, 16000)
    assert torch.allclose(load_audio(path), whole, atol=1e-6)
    assert len(whole) == resampled_length(len(data), rate)
    for start, stop in [(0, 50), (3, 16000), (12345, 23456), (len(whole) - 40, None)]:
        segment = load_audio(path, start, stop)
        assert torch.allclose(segment, whole[start:stop], atol=1e-6), (start, stop)


def test_invalid_segments_name_the_file(tmp_path):
    path = _write(tmp_path / "a.wav", _noise(1000))
    for start, stop in [(-1, None), (10, 10), (5000, None)]:
        with pytest.raises(AudioError, match="a.wav"):
            load_audio(path, start, stop)
