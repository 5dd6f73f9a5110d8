"""benchmarks/bench_diarization.py: the energy rule, the conversation simulator, the staged
clustering and the frame scoring (synthetic clips: no corpus needed)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_diarization as bench  # noqa: E402

RATE = bench.RATE


def _word(seconds, frequency, rng, lead=0.2, tail=0.2, floor=1e-4):
    """A 'clip': a quiet noise floor around a tone burst of ``seconds``."""
    total = int((lead + seconds + tail) * RATE)
    wav = floor * rng.standard_normal(total)
    start = int(lead * RATE)
    t = np.arange(int(seconds * RATE)) / RATE
    wav[start:start + t.size] += 0.2 * np.sin(2 * np.pi * frequency * t)
    return wav.astype(np.float32)


def _pool(speakers=5, clips=6, seed=0):
    rng = np.random.default_rng(seed)
    pool = {}
    for number in range(speakers):
        name = f"spk{number}"
        pool[name] = [bench.prepare_clip(f"{name}/{i}.flac",
                                         _word(rng.uniform(0.3, 0.9), 200 + 90 * number, rng),
                                         bench.BRIDGE_SECONDS["words"]) for i in range(clips)]
    return pool


def test_energy_rule_cuts_leading_and_trailing_silence():
    rng = np.random.default_rng(1)
    wav = _word(0.5, 300, rng, lead=0.3, tail=0.4)
    (start, end), spans = bench.energy_speech(wav)
    assert abs(start / RATE - (0.3 - bench.ENERGY_PAD_SECONDS)) <= 0.011
    assert abs(end / RATE - (0.8 + bench.ENERGY_PAD_SECONDS)) <= 0.011
    assert spans == [(0, end - start)]


def test_energy_rule_leaves_out_a_click_beyond_the_bridge():
    rng = np.random.default_rng(2)
    wav = _word(0.4, 300, rng, lead=0.2, tail=0.6)
    wav[int(0.95 * RATE):int(0.98 * RATE)] += 0.05  # a click 0.35 s after the word
    (start, end), _ = bench.energy_speech(wav, bridge_seconds=0.1)
    assert end / RATE < 0.7
    (_, end_sentence), spans = bench.energy_speech(wav, bridge_seconds=1.0)
    assert end_sentence / RATE > 0.95  # a sentence's bridge keeps it ...
    assert len(spans) == 2  # ... but the 0.35 s pause is not speech in the reference


def test_prepared_clips_are_at_the_level_and_faded():
    clip = _pool(1, 1)["spk0"][0]
    speech = np.concatenate([clip.audio[a:b] for a, b in clip.spans]).astype(np.float64)
    assert 20 * np.log10(np.sqrt(np.mean(speech ** 2))) == pytest.approx(bench.CLIP_LEVEL_DBFS, abs=0.3)
    assert clip.audio[0] == 0.0 and clip.audio[-1] == 0.0


@pytest.mark.parametrize("noise", ["clean", "white 20 dB", "babble 20 dB"])
def test_the_simulator_is_seeded(noise):
    pool = _pool()
    first = bench.simulate_conversation(pool, 3, seed=5, noise=noise)
    second = bench.simulate_conversation(pool, 3, seed=5, noise=noise)
    other = bench.simulate_conversation(pool, 3, seed=6, noise=noise)
    assert np.array_equal(first.wav, second.wav) and first.reference == second.reference
    assert not (first.wav.size == other.wav.size and np.array_equal(first.wav, other.wav))


def test_the_reference_is_where_the_clean_audio_is():
    pool = _pool()
    for seed in range(5):
        rec = bench.simulate_conversation(pool, 3, seed=seed)
        assert len({spk for _, _, spk in rec.reference}) == 3 == len(rec.speakers)
        mask = np.zeros(rec.wav.size, dtype=bool)
        previous_end = 0.0
        for start, end, _ in rec.reference:
            assert previous_end <= start < end <= rec.seconds  # sorted, no overlap
            previous_end = end
            mask[int(round(start * RATE)):int(round(end * RATE))] = True
        assert np.all(rec.wav[~mask] == 0.0)  # nothing outside the reference (digital silence)
        inside = rec.wav[mask].astype(np.float64)
        assert np.sqrt(np.mean(inside ** 2)) > 10 ** (bench.CLIP_LEVEL_DBFS / 20) / 2
        # the tone of every reference segment is its speaker's
        for start, end, speaker in rec.reference:
            piece = rec.wav[int(round(start * RATE)):int(round(end * RATE))]
            peak = np.argmax(np.abs(np.fft.rfft(piece))) * RATE / piece.size
            assert abs(peak - (200 + 90 * int(speaker[3:]))) < 15


def test_turn_lengths_and_no_clip_twice():
    pool = _pool(clips=12)
    rng = np.random.default_rng(0)
    for speaker, clips in pool.items():
        turns = bench._turns_of(clips, rng)
        used = [clip.path for turn in turns for clip in turn]
        assert len(used) == len(set(used))
        for turn in turns:
            seconds = sum(clip.seconds for clip in turn)
            assert seconds <= bench.TURN_SECONDS[1] + 1e-9
            assert seconds >= bench.TURN_SECONDS[0] or len(turns) == 1


def test_noise_is_at_the_snr():
    pool = _pool()
    clean = bench.simulate_conversation(pool, 2, seed=3)
    noisy = bench.simulate_conversation(pool, 2, seed=3, noise="white 20 dB")
    assert clean.reference == noisy.reference
    noise = noisy.wav.astype(np.float64) - clean.wav
    mask = np.zeros(clean.wav.size, dtype=bool)
    for start, end, _ in clean.reference:
        mask[int(round(start * RATE)):int(round(end * RATE))] = True
    snr = 10 * np.log10(np.mean(clean.wav[mask].astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(bench.SNR_DB, abs=0.2)


def test_recording_seeds_differ_between_dev_and_test():
    test = {bench.recording_seed("test", s, n, i) for s in bench.SOURCES for n in (2, 3, 4) for i in range(60)}
    dev = {bench.recording_seed("dev", s, n, i) for s in bench.SOURCES for n in (2, 3, 4) for i in range(60)}
    assert len(test) == len(dev) == 360 and not test & dev


def test_merge_sweep_equals_cluster():
    from fefa_speechbrain.inference.diarization import cluster

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    embeddings = np.concatenate([c + 0.6 * rng.normal(size=(12, 16)) for c in centres])
    thresholds = (0.2, 0.5, 0.8, 0.95)
    swept = bench.merge_sweep(embeddings, 0.3, thresholds)
    for t in thresholds:
        assert swept[t].tolist() == cluster(embeddings, None, pruning=0.3, merge_threshold=t).tolist()


def test_frames_and_smoothing():
    labels = bench.frames_of([(0, 1600), (3200, 3300)], 40)
    assert labels[:10].all() and not labels[10:20].any() and labels[20] and not labels[21:].any()
    raw = np.zeros(100, dtype=bool)
    raw[10:40] = True
    raw[45:70] = True  # a 50 ms pause: filled
    raw[90:92] = True  # 20 ms: dropped
    smooth = bench.smooth_frames(raw)
    assert smooth[7:73].all() and not smooth[:7].any() and not smooth[73:].any()


def test_open_set_rates_count_impostors_above_the_threshold():
    trials = [(0.8, True), (0.7, False), (0.5, True), (0.9, None), (0.3, None), (0.2, None)]
    rates = bench.open_set_rates(trials, 0.6)
    assert rates == {"rank1": 2 / 3, "open_set_accept": 1 / 3, "impostor_far": 1 / 3}


def test_der_components_with_pyannote():
    pytest.importorskip("pyannote.metrics")  # a benchmark dependency, not the package's
    ref = [(0.0, 2.0, "a"), (3.0, 5.0, "b")]
    out = bench.der_components(ref, [(0.0, 2.0, "x"), (3.0, 5.0, "x")], 6.0)
    assert {k: round(v, 3) for k, v in out["none"].items()} == {
        "missed": 0.0, "false_alarm": 0.0, "confusion": 2.0, "total": 4.0}
