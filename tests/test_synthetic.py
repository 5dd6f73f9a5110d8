"""Tests of the synthetic VoxCeleb-layout corpus (fefa_speechbrain.data.synthetic)."""

import glob
import itertools
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from fefa_speechbrain.data import synthetic
from fefa_speechbrain.data.synthetic import (
    MANIFEST_NAME,
    PENDING_NAME,
    draw_session,
    draw_voice,
    generate_corpus,
    main,
    plan_trials,
    synthesize_utterance,
)

TINY = dict(
    n_speakers=6,
    n_test_speakers=3,
    sessions_per_speaker=2,
    utts_per_session=2,
    min_duration=1.0,
    max_duration=1.5,
    seed=3,
    progress=False,
)
SESSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{10}$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny"))
    return out, generate_corpus(out, **TINY)


def _wav_files(out):
    """Every WAV under out/wav, relative to out."""
    paths = glob.glob(os.path.join(out, "wav", "**", "*.wav"), recursive=True)
    return sorted(os.path.relpath(p, out) for p in paths)


def _corpus_bytes(out):
    """Relative path -> content of every file of a corpus folder."""
    contents = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fin:
                contents[os.path.relpath(path, out)] = fin.read()
    return contents


def _read_trials(out, name="veri_test2.txt"):
    with open(os.path.join(out, name), encoding="utf-8") as fin:
        return [line.split() for line in fin]


def test_layout_audio_format_and_summary(tiny):
    out, summary = tiny
    assert summary["generated"] is True
    assert summary["n_speakers"] == 6 and summary["n_train_speakers"] == 3
    assert summary["test_speakers"] == ["id10004", "id10005", "id10006"]
    assert summary["n_sessions"] == 12 and summary["n_utterances"] == 24
    files = _wav_files(out)
    with open(os.path.join(out, MANIFEST_NAME), encoding="utf-8") as fin:
        manifest = json.load(fin)
    assert files == sorted(manifest["files"]) and len(files) == 24
    assert not os.path.exists(os.path.join(out, PENDING_NAME))

    speakers = sorted(os.listdir(os.path.join(out, "wav")))
    assert speakers == [f"id1000{i}" for i in range(1, 7)]
    all_sessions = []
    for speaker in speakers:
        sessions = sorted(os.listdir(os.path.join(out, "wav", speaker)))
        assert len(sessions) == 2 and all(SESSION_PATTERN.match(s) for s in sessions)
        all_sessions += sessions
        for session in sessions:
            assert sorted(os.listdir(os.path.join(out, "wav", speaker, session))) == [
                "00001.wav",
                "00002.wav",
            ]
    assert len(set(all_sessions)) == 12

    total = 0
    for relative in files:
        info = sf.info(os.path.join(out, relative))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16000,
            1,
            "PCM_16",
            "WAV",
        )
        assert 16000 <= info.frames <= 24000
        pcm, _ = sf.read(os.path.join(out, relative), dtype="int16")
        peak = np.abs(pcm.astype(int)).max()
        assert 0.2 * 32767 < peak <= 0.89 * 32767 + 1  # loud enough, never clipped
        total += info.frames
    assert summary["seconds"] == pytest.approx(total / 16000, abs=1e-3)


def test_trial_list_format_labels_and_balance(tiny):
    out, summary = tiny
    trials = _read_trials(out)
    assert len(trials) == summary["n_trials"] == 24
    assert summary["n_target_trials"] == 12  # 3 speakers x 4 cross-session pairs
    pairs = set()
    for fields in trials:
        assert len(fields) == 3 and fields[0] in ("0", "1")
        label, enrol, test = int(fields[0]), fields[1], fields[2]
        for path in (enrol, test):
            assert os.path.isfile(os.path.join(out, "wav", path))
            assert path.split("/")[0] in summary["test_speakers"]
        assert label == int(enrol.split("/")[0] == test.split("/")[0])
        if label:
            assert enrol.split("/")[1] != test.split("/")[1]  # across sessions
        pairs.add(frozenset((enrol, test)))
    assert len(pairs) == len(trials)
    assert sum(int(f[0]) for f in trials) == len(trials) // 2


def test_deterministic_across_runs_and_processes(tiny, tmp_path):
    out, _ = tiny
    again = str(tmp_path / "again")
    generate_corpus(again, n_jobs=2, **TINY)
    first, second = _corpus_bytes(out), _corpus_bytes(again)
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first)


def test_adding_speakers_keeps_existing_audio(tiny, tmp_path):
    out, _ = tiny
    bigger = str(tmp_path / "bigger")
    generate_corpus(bigger, **dict(TINY, n_speakers=7))
    small, large = _corpus_bytes(out), _corpus_bytes(bigger)
    wavs = [name for name in small if name.endswith(".wav")]
    assert len(wavs) == 24 and all(small[name] == large[name] for name in wavs)
    assert len([name for name in large if name.endswith(".wav")]) == 28
    test_speakers = {fields[1].split("/")[0] for fields in _read_trials(bigger)}
    assert test_speakers == {"id10005", "id10006", "id10007"}


def _mtimes(out):
    return {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in _corpus_bytes(out)}


def test_idempotent_then_regenerates_on_change(tmp_path, capsys):
    out = str(tmp_path / "corpus")
    small = dict(TINY, n_speakers=4, n_test_speakers=2, utts_per_session=1, max_duration=1.0)
    first = generate_corpus(out, **small)
    before = _mtimes(out)
    second = generate_corpus(out, **dict(small, progress=True))
    assert "up to date" in capsys.readouterr().err
    assert second["generated"] is False and _mtimes(out) == before
    assert dict(first, generated=False) == second

    removed = os.path.join(out, _wav_files(out)[0])
    os.remove(removed)
    assert generate_corpus(out, **small)["generated"] is True and os.path.isfile(removed)

    # A new seed gives new sessions: the old files go, only the new listing remains.
    changed = generate_corpus(out, **dict(small, seed=4, trials_name="trials.txt"))
    assert changed["generated"] is True
    with open(os.path.join(out, MANIFEST_NAME), encoding="utf-8") as fin:
        manifest = json.load(fin)
    assert manifest["config"]["seed"] == 4
    assert _wav_files(out) == sorted(manifest["files"])
    assert sorted(os.listdir(out)) == [MANIFEST_NAME, "trials.txt", "wav"]


def test_interrupted_run_is_not_trusted_and_is_cleaned(tmp_path, monkeypatch):
    out = str(tmp_path / "corpus")
    config = dict(TINY, n_speakers=5, n_test_speakers=2, max_duration=1.0)
    stranger = os.path.join(out, "wav", "notes.txt")
    os.makedirs(os.path.dirname(stranger))
    with open(stranger, "w", encoding="utf-8") as fout:
        fout.write("not ours")
    real_pcm16 = synthetic._pcm16
    converted = []

    def power_cut(wav):  # fails inside the 16th file's write, after its temp file exists
        if len(converted) == 15:
            raise KeyboardInterrupt("power cut")
        converted.append(len(wav))
        return real_pcm16(wav)

    monkeypatch.setattr(synthetic, "_pcm16", power_cut)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(out, **config)
    assert not os.path.exists(os.path.join(out, MANIFEST_NAME))
    assert os.path.exists(os.path.join(out, PENDING_NAME))
    assert len(_wav_files(out)) == 15
    leftovers = [n for _, _, names in os.walk(out) for n in names if n.endswith(".tmp")]
    assert leftovers == []

    monkeypatch.setattr(synthetic, "_pcm16", real_pcm16)
    summary = generate_corpus(out, **dict(config, n_speakers=3))
    assert summary["generated"] is True
    assert len(_wav_files(out)) == 12 and os.path.isfile(stranger)
    assert sorted(os.listdir(os.path.join(out, "wav"))) == [
        "id10001",
        "id10002",
        "id10003",
        "notes.txt",
    ]
    assert not os.path.exists(os.path.join(out, PENDING_NAME))


def _utterance_table(n_speakers, n_sessions, n_utts):
    return [
        (f"s{s}", f"k{k}", f"s{s}/k{k}/{u}.wav")
        for s in range(n_speakers)
        for k in range(n_sessions)
        for u in range(n_utts)
    ]


def test_plan_trials_counts_and_session_preference():
    utterances = _utterance_table(4, 2, 3)  # 9 cross- and 6 same-session pairs per speaker
    session_of = {path: (spk, k) for spk, k, path in utterances}
    trials = plan_trials(utterances, n_trials=20, seed=1)
    assert sum(t[0] for t in trials) == 10 and len(trials) == 20
    assert all(session_of[a] != session_of[b] for label, a, b in trials)
    assert len({(a, b) for _, a, b in trials}) == 20

    trials = plan_trials(utterances, n_trials=80, seed=1)  # 40 targets > 36 cross-session
    targets = [(a, b) for label, a, b in trials if label]
    same = [pair for pair in targets if session_of[pair[0]] == session_of[pair[1]]]
    assert len(targets) == 40 and len(same) == 4
    assert all(session_of[a][0] != session_of[b][0] for label, a, b in trials if not label)
    assert plan_trials(utterances, n_trials=80, seed=1) == trials != plan_trials(
        utterances, n_trials=80, seed=2
    )

    single = plan_trials(_utterance_table(2, 1, 3))  # one session: same-session targets
    assert [t[0] for t in single].count(1) == 6 and len(single) == 12

    with pytest.raises(ValueError, match="n_trials=200 is too many"):
        plan_trials(utterances, n_trials=200)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n_test_speakers=6), "n_test_speakers=6 must be smaller than n_speakers=6"),
        (dict(n_test_speakers=1), "n_test_speakers must be an integer >= 2"),
        (dict(min_duration=2.0, max_duration=1.0), "min_duration=2.0, max_duration=1.0"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(sessions_per_speaker=1, utts_per_session=1), "at least 2"),
        (dict(sample_rate=16000.0), "sample_rate must be an integer"),
        (dict(trials_name="lists/veri.txt"), "plain file name"),
        (dict(n_trials=1000), "n_trials=1000 is too many"),
        (dict(n_jobs=0), "n_jobs must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_corpus(str(tmp_path / "c"), **dict(TINY, **change))
    assert not os.path.exists(tmp_path / "c" / "wav")


def test_other_sample_rate_is_finite_and_bounded():
    session = draw_session(0, 1, 0, sample_rate=8000)
    wav = synthesize_utterance(draw_voice(0, 1), session, np.random.default_rng(1), 6000, 8000)
    assert wav.shape == (6000,) and np.isfinite(wav).all()
    assert 0.1 < np.abs(wav).max() < 0.9


def test_command_line(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = [out, "--speakers", "3", "--test-speakers", "2", "--sessions", "1", "--utts", "2"]
    args += ["--min-dur", "0.5", "--max-dur", "0.5", "--seed", "7", "--trials", "4"]
    summary = main(args)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == summary
    assert "Synthetic corpus" in captured.err
    assert summary["n_utterances"] == 6 and summary["n_trials"] == 4
    assert len(_read_trials(out)) == 4
    with pytest.raises(SystemExit):
        main([out, "--speakers", "3", "--test-speakers", "3", "--quiet"])
    assert "n_test_speakers=3 must be smaller" in capsys.readouterr().err


def _mean_log_spectrum(path):
    """Training-free utterance embedding: mean log power spectrum, mean-removed, unit norm."""
    wav, _ = sf.read(path)
    frames = np.lib.stride_tricks.sliding_window_view(wav, 400)[::160] * np.hamming(400)
    mean_log = np.log(np.abs(np.fft.rfft(frames, 512)) ** 2 + 1e-10).mean(0)
    mean_log -= mean_log.mean()
    return mean_log / np.linalg.norm(mean_log)


def _eer(target_scores, non_target_scores):
    """Equal error rate by brute force over every threshold."""
    targets, non_targets = np.asarray(target_scores), np.asarray(non_target_scores)
    thresholds = np.concatenate([targets, non_targets])
    return min(
        max(np.mean(targets < t), np.mean(non_targets >= t)) for t in thresholds
    )


def test_speakers_distinguishable_and_sessions_a_nuisance(tmp_path):
    out = str(tmp_path / "medium")
    generate_corpus(
        out,
        n_speakers=12,
        n_test_speakers=2,
        sessions_per_speaker=3,
        utts_per_session=2,
        min_duration=1.5,
        max_duration=2.0,
        seed=0,
        progress=False,
    )
    embeddings = {path: _mean_log_spectrum(os.path.join(out, path)) for path in _wav_files(out)}
    same_session, cross_session, non_target = [], [], []
    for a, b in itertools.combinations(sorted(embeddings), 2):
        (_, spk_a, ses_a, _), (_, spk_b, ses_b, _) = a.split(os.sep), b.split(os.sep)
        score = float(embeddings[a] @ embeddings[b])
        if spk_a != spk_b:
            non_target.append(score)
        else:
            (same_session if ses_a == ses_b else cross_session).append(score)
    assert np.mean(same_session) > np.mean(cross_session) > np.mean(non_target)
    cross_eer, same_eer = _eer(cross_session, non_target), _eer(same_session, non_target)
    # Speakers are distinguishable without training, but far from perfectly, and a
    # change of session costs much more than a change of content.
    assert 0.15 < cross_eer < 0.42
    assert same_eer < cross_eer - 0.1
