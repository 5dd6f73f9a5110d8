"""Corpus preparation (fefa_speechbrain.data.prepare) and atomic writing (fefa_speechbrain.atomic)."""

import csv
import itertools
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from fefa_speechbrain.data import manifests
from fefa_speechbrain.data import prepare as prep
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.atomic import atomic_open, atomic_write_csv
from fefa_speechbrain.data.manifests import CSV_FIELDS
from fefa_speechbrain.data.prepare import (
    prepare_folder_corpus,
    prepare_voxceleb,
)
from fefa_speechbrain.data.trials import read_trial_list

SR = 16000
SPEECH_COMMANDS = "/work/shared/data/speech_commands_v002_test"


def _write(path, data, rate=SR, subtype=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return path


def _noise(n, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.1 * rng.standard_normal(shape)).astype("float32")


def _read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _rows_by_id(path):
    header, rows = _read_csv(path)
    assert header == CSV_FIELDS
    return {row[0]: row for row in rows}


# VoxCeleb-like corpus: speaker -> video -> utterance -> seconds
VOX = {
    "id10001": {"vidA": {"00001": 7.5, "00002": 6.5}, "vidB": {"00001": 2.0, "00002": 3.0}},
    "id10002": {"vidC": {"00001": 4.0, "00002": 1.2, "00003": 5.0}},
    "id10270": {"tv1": {"00001": 1.5, "00002": 1.5}},
    "id10271": {"tv2": {"00001": 1.5}},
    "id10272": {"tv3": {"00001": 1.5}},
}
VOX_TRIALS = [
    "1 id10270/tv1/00001.wav id10270/tv1/00002.wav",
    "0 id10270/tv1/00001.wav id10271/tv2/00001.wav",
    "0 id10270/tv1/00002.wav id10272/tv3/00001.wav",
]


def _make_vox(root, spec=VOX, seed=0):
    for number, (speaker, videos) in enumerate(sorted(spec.items())):
        for video, utts in videos.items():
            for utt, seconds in utts.items():
                path = os.path.join(root, "wav", speaker, video, f"{utt}.wav")
                _write(path, _noise(int(seconds * SR), seed=seed + number))
    return str(root)


def _trial_file(folder, lines):
    path = os.path.join(str(folder), "trials_in.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def _vox_setup(tmp_path):
    root = _make_vox(tmp_path / "vox1")
    return root, _trial_file(tmp_path, VOX_TRIALS), str(tmp_path / "save")


def test_voxceleb_csvs_have_speechbrain_columns_chunks_and_rows(tmp_path):
    root, trials, save = _vox_setup(tmp_path)
    summary = prepare_voxceleb(root, save, trials, split_ratio=(100, 0), verbose=False)
    assert summary["skipped"] is False
    train = _rows_by_id(os.path.join(save, "train.csv"))
    wav = os.path.join(root, "wav")
    expected = {}
    for video, utt, seconds, bounds in [
        ("vidA", "00001", 7.5, [(0, 48000), (48000, 96000), (96000, 120000)]),  # 1.5 s rest kept
        ("vidA", "00002", 6.5, [(0, 48000), (48000, 96000)]),  # 0.5 s rest dropped
        ("vidB", "00001", 2.0, [(0, 32000)]),  # shorter than seg_dur: its own length
        ("vidB", "00002", 3.0, [(0, 48000)]),
    ]:
        for start, stop in bounds:
            key = f"id10001--{video}--{utt}_{start}_{stop}"
            path = os.path.join(wav, "id10001", video, f"{utt}.wav")
            expected[key] = [key, str(seconds), path, str(start), str(stop), "id10001"]
    for key, row in expected.items():
        assert train[key] == row
    assert len([k for k in train if k.startswith("id10001")]) == len(expected)
    assert sorted({row[5] for row in train.values()}) == ["id10001", "id10002"]
    assert _read_csv(os.path.join(save, "dev.csv"))[1] == []

    enrol = _rows_by_id(os.path.join(save, "enrol.csv"))
    test = _rows_by_id(os.path.join(save, "test.csv"))
    path = os.path.join(wav, "id10270", "tv1", "00001.wav")
    assert enrol["id10270/tv1/00001"] == ["id10270/tv1/00001", "1.5", path, "0", "24000", "id10270"]
    assert sorted(enrol) == ["id10270/tv1/00001", "id10270/tv1/00002"]
    assert sorted(test) == ["id10270/tv1/00002", "id10271/tv2/00001", "id10272/tv3/00001"]
    assert open(os.path.join(save, "trials.txt")).read().splitlines() == VOX_TRIALS


def test_verification_speakers_of_both_columns_leave_training(tmp_path):
    root, trials, save = _vox_setup(tmp_path)
    summary = prepare_voxceleb(root, save, trials, verbose=False)
    speakers = set()
    for name in ("train.csv", "dev.csv"):
        speakers |= {row[5] for row in _read_csv(os.path.join(save, name))[1]}
    assert speakers == {"id10001", "id10002"}
    # id10271 and id10272 appear only in the test column
    assert summary["excluded_speakers"] == ["id10270", "id10271", "id10272"]


def test_stratified_utterance_split_and_speaker_split(tmp_path):
    spec = {f"id1{n:04d}": {"v": {f"{u:05d}": 1.0 for u in range(10)}} for n in range(10)}
    root = _make_vox(tmp_path / "vox", spec)
    save = str(tmp_path / "s1")
    options = dict(splits=("train", "dev"), split_ratio=(80, 20), verbose=False)
    summary = prepare_voxceleb(root, save, **options)
    train = _rows_by_id(os.path.join(save, "train.csv"))
    dev = _rows_by_id(os.path.join(save, "dev.csv"))
    assert (summary["train"]["rows"], summary["dev"]["rows"]) == (80, 20)
    assert not set(train) & set(dev)
    for speaker in spec:  # every speaker: 8 train, 2 dev files
        assert sum(row[5] == speaker for row in train.values()) == 8
        assert sum(row[5] == speaker for row in dev.values()) == 2
    again = str(tmp_path / "s2")
    prepare_voxceleb(root, again, **options)
    assert _rows_by_id(os.path.join(again, "dev.csv")) == dev  # seeded
    other = str(tmp_path / "s3")
    prepare_voxceleb(root, other, seed=7, **options)
    assert _rows_by_id(os.path.join(other, "dev.csv")) != dev

    by_speaker = str(tmp_path / "s4")
    prepare_voxceleb(root, by_speaker, split_speaker=True, **options)
    train_spk = {r[5] for r in _rows_by_id(os.path.join(by_speaker, "train.csv")).values()}
    dev_spk = {r[5] for r in _rows_by_id(os.path.join(by_speaker, "dev.csv")).values()}
    assert len(train_spk) == 8 and len(dev_spk) == 2 and not train_spk & dev_spk


def test_several_roots_and_random_segments(tmp_path):
    vox1 = _make_vox(tmp_path / "vox1")
    vox2 = _make_vox(tmp_path / "vox2", {"id00012": {"abc": {"00001": 4.0}}})
    trials = _trial_file(tmp_path, VOX_TRIALS)
    save = str(tmp_path / "save")
    prepare_voxceleb(
        f"{vox1}, {vox2}", save, trials, split_ratio=(100, 0), random_segment=True, verbose=False
    )
    train = _rows_by_id(os.path.join(save, "train.csv"))
    path = os.path.join(vox2, "wav", "id00012", "abc", "00001.wav")
    key = "id00012--abc--00001"
    assert train[key] == [key, "4.0", path, "0", "64000", "id00012"]
    assert len(train) == 8  # one row per file: 4 + 3 + 1


def test_source_unpacks_the_voxceleb1_test_archive(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    wav = str(tmp_path / "t.wav")
    _write(wav, _noise(SR))
    with zipfile.ZipFile(source / "vox1_test_wav.zip", "w") as archive:
        for rel in ["id10270/tv1/00001.wav", "id10270/tv1/00002.wav", "id10271/tv2/00001.wav"]:
            archive.write(wav, f"wav/{rel}")
    root = tmp_path / "vox1"
    root.mkdir()
    trials = _trial_file(tmp_path, VOX_TRIALS[:2])
    prepare_voxceleb(
        str(root), str(tmp_path / "save"), trials, splits=("test",), source=str(source),
        verbose=False,
    )
    assert os.path.isfile(root / "wav" / "id10270" / "tv1" / "00002.wav")
    assert len(_read_csv(tmp_path / "save" / "test.csv")[1]) == 2


def _folder_corpus(root, speakers, n_utts, seconds=1.0, seed=0):
    for number, speaker in enumerate(speakers):
        for utt in range(n_utts):
            path = os.path.join(str(root), speaker, f"u{utt}.flac")
            _write(path, _noise(int(seconds * SR), seed=seed + 100 * number + utt))
    return str(root)


def _add_bad_files(root):
    """Bad files in training speaker 'sp0'; returns path -> (action, reason start)."""
    folder = os.path.join(root, "sp0")
    junk = os.path.join(folder, "junk.wav")
    open(junk, "wb").write(os.urandom(3000))
    empty = os.path.join(folder, "empty.wav")
    open(empty, "wb").close()
    nan = _noise(SR)
    nan[7] = np.inf
    clipped = _noise(SR)
    clipped[:100] = -1.0
    return {
        junk: ("skipped", "unreadable"),
        empty: ("skipped", "empty"),
        _write(os.path.join(folder, "short.wav"), _noise(100)): ("skipped", "too short"),
        _write(os.path.join(folder, "silent.wav"), np.zeros(SR)): ("skipped", "silent"),
        _write(os.path.join(folder, "nan.wav"), nan, subtype="FLOAT"): ("skipped", "contains NaN"),
        _write(os.path.join(folder, "stereo.wav"), _noise(SR, channels=2)): (
            "converted", "2 channels"
        ),
        _write(os.path.join(folder, "low.wav"), _noise(8000), rate=8000): (
            "converted", "sample rate 8000"
        ),
        _write(os.path.join(folder, "clip.wav"), clipped, subtype="FLOAT"): (
            "kept with warning", "clipped"
        ),
    }


def test_report_lists_every_bad_file_with_reason_and_action(tmp_path, capsys):
    root = _folder_corpus(tmp_path / "corpus", ["sp0", "sp1", "sp2", "sp3"], 3)
    bad = _add_bad_files(root)
    save = str(tmp_path / "save")
    summary = prepare_folder_corpus(root, save, test_speakers=["sp2", "sp3"], split_ratio=(100, 0))
    problems = {p["path"]: p for p in summary["problems"]}
    assert set(problems) == set(bad)
    for path, (action, reason) in bad.items():
        assert problems[path]["action"] == action
        assert problems[path]["reasons"][0].startswith(reason), problems[path]
    counts = (summary["n_skipped"], summary["n_converted"], summary["n_kept_with_warning"])
    assert counts == (5, 2, 1)
    stored = json.load(open(os.path.join(save, "prepare_report.json")))
    assert stored["problems"] == summary["problems"]
    printed = capsys.readouterr().out
    for path, (action, _) in bad.items():
        assert f"{action}: {path}: " in printed

    train = _rows_by_id(os.path.join(save, "train.csv"))
    used = {row[2] for row in train.values()}
    for path, (action, _) in bad.items():
        assert (path in used) == (action != "skipped")
    low = os.path.join(root, "sp0", "low.wav")
    assert train["sp0--low_0_16000"] == ["sp0--low_0_16000", "1.0", low, "0", "16000", "sp0"]
    assert len(load_audio(low, 0, 16000)) == 16000


def test_header_and_none_check_modes(tmp_path):
    root = _folder_corpus(tmp_path / "corpus", ["sp0", "sp1", "sp2", "sp3"], 3)
    bad = _add_bad_files(root)
    header = prepare_folder_corpus(
        root, str(tmp_path / "h"), test_speakers=["sp2", "sp3"], check_audio="header", verbose=False
    )
    found = {p["path"]: p["action"] for p in header["problems"]}
    by_reason = {reason: path for path, (_, reason) in bad.items()}
    visible = ["unreadable", "empty", "too short", "2 channels", "sample rate 8000"]
    assert set(found) == {by_reason[r] for r in visible}
    none = prepare_folder_corpus(
        root, str(tmp_path / "n"), test_speakers=["sp2", "sp3"], check_audio="none", verbose=False
    )
    assert {p["path"] for p in none["problems"]} == {by_reason["unreadable"], by_reason["empty"]}


def test_parallel_check_gives_the_same_result(tmp_path):
    root = _folder_corpus(tmp_path / "corpus", ["sp0", "sp1", "sp2", "sp3"], 3)
    _add_bad_files(root)
    one = prepare_folder_corpus(root, str(tmp_path / "a"), test_speakers=["sp3"], verbose=False)
    two = prepare_folder_corpus(
        root, str(tmp_path / "b"), test_speakers=["sp3"], n_jobs=2, verbose=False
    )
    assert one["problems"] == two["problems"]
    for name in ("train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.txt"):
        assert open(tmp_path / "a" / name).read() == open(tmp_path / "b" / name).read()


def _trials(save):
    lines = open(os.path.join(save, "trials.txt")).read().splitlines()
    return [tuple(line.split()) for line in lines]


def test_generated_trials_are_complete_balanced_and_seeded(tmp_path):
    speakers = {"a": 4, "b": 3, "c": 5, "d": 2}
    root = str(tmp_path / "corpus")
    for speaker, count in speakers.items():
        _folder_corpus(root, [speaker], count, seed=ord(speaker))
    _folder_corpus(root, ["train1", "train2"], 2)
    save = str(tmp_path / "s")
    summary = prepare_folder_corpus(root, save, test_speakers=list(speakers), verbose=False)
    trials = _trials(save)
    targets = {(e, t) for label, e, t in trials if label == "1"}
    nontargets = [(e, t) for label, e, t in trials if label == "0"]
    every_target = {
        (f"{s}/u{i}.flac", f"{s}/u{j}.flac")
        for s, n in speakers.items() for i, j in itertools.combinations(range(n), 2)
    }
    assert targets == every_target  # 6 + 3 + 10 + 1
    assert len(nontargets) == len(targets) == 20 == summary["trials"]["nontarget"]
    assert len(set(nontargets)) == 20
    for enrol, test in nontargets:
        assert enrol.split("/")[0] != test.split("/")[0]
        assert os.path.isfile(os.path.join(root, enrol))
        assert os.path.isfile(os.path.join(root, test))
    prepare_folder_corpus(root, str(tmp_path / "s2"), test_speakers=list(speakers), verbose=False)
    assert _trials(str(tmp_path / "s2")) == trials
    prepare_folder_corpus(
        root, str(tmp_path / "s3"), test_speakers=list(speakers), seed=5, verbose=False
    )
    assert _trials(str(tmp_path / "s3")) != trials

    capped = str(tmp_path / "capped")
    prepare_folder_corpus(root, capped, test_speakers=list(speakers), n_trials=10, verbose=False)
    labels = [label for label, _, _ in _trials(capped)]
    assert labels.count("1") == 5 and labels.count("0") == 5
    assert {(e, t) for l, e, t in _trials(capped) if l == "1"} <= every_target

    enrol = _rows_by_id(os.path.join(save, "enrol.csv"))
    assert set(enrol) == {e.rsplit(".", 1)[0] for _, e, _ in trials}


def test_all_nontargets_taken_when_there_are_fewer_than_targets(tmp_path):
    root = _folder_corpus(tmp_path / "corpus", ["a"], 4)
    _folder_corpus(root, ["b"], 1, seed=9)
    _folder_corpus(root, ["tr"], 2, seed=20)
    save = str(tmp_path / "s")
    summary = prepare_folder_corpus(
        root, save, test_speakers=["a", "b"], min_utts_test=1, verbose=False
    )
    assert (summary["trials"]["target"], summary["trials"]["nontarget"]) == (6, 4)


def test_test_speaker_selection_and_minimum_counts(tmp_path):
    root = _folder_corpus(tmp_path / "corpus", [f"s{i}" for i in range(8)], 3)
    _folder_corpus(root, ["few"], 1, seed=50)
    save = str(tmp_path / "a")
    summary = prepare_folder_corpus(root, save, n_test_speakers=3, min_utts_test=3, verbose=False)
    chosen = summary["test_speakers"]
    assert len(chosen) == 3 and "few" not in chosen
    assert summary["dropped_speakers"] == {"few": "1 usable files < min_utts_train=2"}
    again = prepare_folder_corpus(
        root, str(tmp_path / "b"), n_test_speakers=3, min_utts_test=3, verbose=False
    )
    assert again["test_speakers"] == chosen
    train_speakers = {r[5] for r in _rows_by_id(os.path.join(save, "train.csv")).values()}
    assert train_speakers == {f"s{i}" for i in range(8)} - set(chosen)

    listing = tmp_path / "spk.txt"
    listing.write_text("# test speakers\ns1\n\ns2  # second\nfew\n")
    summary = prepare_folder_corpus(
        root, str(tmp_path / "c"), test_speakers=str(listing), verbose=False
    )
    assert summary["test_speakers"] == ["s1", "s2"]
    assert summary["dropped_speakers"]["few"].startswith("test speaker with 1 usable files")
    with pytest.raises(ValueError, match="not in the corpus: \\['nobody'\\]"):
        prepare_folder_corpus(root, str(tmp_path / "d"), test_speakers=["s1", "nobody"])
    with pytest.raises(ValueError, match="test speakers"):
        prepare_folder_corpus(root, str(tmp_path / "e"))


def test_session_level_layout(tmp_path):
    root = str(tmp_path / "corpus")
    for speaker in ["a", "b", "c"]:
        for session in ["s1", "s2"]:
            _write(os.path.join(root, speaker, session, "x.wav"), _noise(SR, seed=ord(speaker)))
    open(os.path.join(root, "README.md"), "w").write("not audio")
    save = str(tmp_path / "save")
    prepare_folder_corpus(root, save, test_speakers=["c"], split_ratio=(100, 0), verbose=False)
    train = _rows_by_id(os.path.join(save, "train.csv"))
    assert sorted(train) == [f"{s}--{x}--x_0_16000" for s in "ab" for x in ("s1", "s2")]
    assert open(os.path.join(save, "trials.txt")).read() == "1 c/s1/x.wav c/s2/x.wav\n"
    assert sorted(_rows_by_id(os.path.join(save, "enrol.csv"))) == ["c/s1/x"]


def test_trials_with_skipped_files_are_dropped_and_reported(tmp_path):
    root, _, save = _vox_setup(tmp_path)
    silent = os.path.join(root, "wav", "id10272", "tv3", "00001.wav")
    _write(silent, np.zeros(SR))
    trials = _trial_file(tmp_path, VOX_TRIALS)
    summary = prepare_voxceleb(root, save, trials, verbose=False)
    assert summary["trials"]["n"] == 2
    assert summary["trials"]["dropped"] == [
        {
            "line": 3,
            "trial": VOX_TRIALS[2],
            "reason": "skipped by the audio check: id10272/tv3/00001.wav",
        }
    ]
    assert open(os.path.join(save, "trials.txt")).read().splitlines() == VOX_TRIALS[:2]
    assert "id10272/tv3/00001" not in _rows_by_id(os.path.join(save, "test.csv"))


def test_malformed_trial_list_gives_one_error_with_line_numbers(tmp_path):
    root, _, save = _vox_setup(tmp_path)
    lines = [
        VOX_TRIALS[0],
        "1 id10270/tv1/00001.wav",
        VOX_TRIALS[1],
        "2 id10270/tv1/00001.wav id10271/tv2/00001.wav",
        "",
        "0 id10270/tv1/00001.wav id10999/x/00001.wav",
    ]
    trials = _trial_file(tmp_path, lines)
    with pytest.raises(ValueError) as caught:
        prepare_voxceleb(root, save, trials, verbose=False)
    message = str(caught.value)
    assert "3 problems" in message
    assert "line 2: expected 3 fields" in message
    assert "line 4: label must be 0 or 1, found '2'" in message
    assert "line 6: file not found: id10999/x/00001.wav" in message
    assert "line 1:" not in message and "line 3:" not in message
    assert not os.path.exists(save)  # nothing written


def test_m4a_files_give_the_conversion_command(tmp_path):
    root = _make_vox(tmp_path / "vox2", {"id00012": {"abc": {"00001": 1.0}}})
    for n in range(3):
        path = os.path.join(root, "wav", "id00013", "xyz", f"0000{n}.m4a")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").write(b"\x00")
    with pytest.raises(ValueError) as caught:
        prepare_voxceleb(root, str(tmp_path / "s"), splits=("train",), verbose=False)
    message = str(caught.value)
    assert message.startswith("found 3 m4a/aac/mp4 files")
    example = os.path.join(root, "wav", "id00013", "xyz", "00000")
    assert f"ffmpeg -i {example}.m4a -ac 1 -ar 16000 {example}.wav" in message
    assert f"find {os.path.join(root, 'wav')} -name '*.m4a'" in message
    # a converted twin makes the m4a harmless
    for n in range(3):
        _write(os.path.join(root, "wav", "id00013", "xyz", f"0000{n}.wav"), _noise(SR))
    summary = prepare_voxceleb(root, str(tmp_path / "s"), splits=("train",), verbose=False)
    assert summary["train"]["utterances"] == 4

    aac_only = tmp_path / "vox2b" / "aac" / "id00020" / "v"
    aac_only.mkdir(parents=True)
    (aac_only / "00001.m4a").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="mv <root>/aac <root>/wav"):
        prepare_voxceleb(str(tmp_path / "vox2b"), str(tmp_path / "t"), splits=("train",))

    corpus = _folder_corpus(tmp_path / "corpus", ["a", "b"], 2)
    open(os.path.join(corpus, "b", "extra.m4a"), "wb").write(b"\x00")
    with pytest.raises(ValueError, match="found 1 m4a"):
        prepare_folder_corpus(corpus, str(tmp_path / "u"), test_speakers=["b"])


def test_second_run_does_nothing_and_changes_redo_the_work(tmp_path):
    root, trials, save = _vox_setup(tmp_path)
    first = prepare_voxceleb(root, save, trials, verbose=False)
    names = ["train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.txt", "prepare_report.json"]
    stamps = {n: os.stat(os.path.join(save, n)).st_mtime_ns for n in names}
    second = prepare_voxceleb(root, save, trials, verbose=False)
    assert second["skipped"] is True
    assert {n: os.stat(os.path.join(save, n)).st_mtime_ns for n in names} == stamps
    assert second["train"] == first["train"]

    third = prepare_voxceleb(root, save, trials, seg_dur=2.0, verbose=False)
    assert third["skipped"] is False and third["train"]["rows"] != first["train"]["rows"]
    assert prepare_voxceleb(root, save, trials, seg_dur=2.0, verbose=False)["skipped"] is True

    _write(os.path.join(root, "wav", "id10002", "vidC", "00009.wav"), _noise(SR))
    fourth = prepare_voxceleb(root, save, trials, seg_dur=2.0, verbose=False)
    assert fourth["skipped"] is False
    assert fourth["train"]["utterances"] + fourth["dev"]["utterances"] == 4 + 3 + 1

    os.remove(os.path.join(save, "dev.csv"))
    assert prepare_voxceleb(root, save, trials, seg_dur=2.0, verbose=False)["skipped"] is False


def test_interrupted_run_then_rerun_gives_complete_csvs(tmp_path, monkeypatch):
    root, trials, save = _vox_setup(tmp_path)
    reference = str(tmp_path / "reference")
    prepare_voxceleb(root, reference, trials, verbose=False)
    prepare_voxceleb(root, save, trials, verbose=False)  # a complete run with the same options

    calls = []

    def failing_writer(path, rows, fieldnames):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        atomic_write_csv(path, rows, fieldnames)

    monkeypatch.setattr(manifests, "atomic_write_csv", failing_writer)
    with pytest.raises(KeyboardInterrupt):  # other options: train.csv rewritten, then stop
        prepare_voxceleb(root, save, trials, seg_dur=2.0, verbose=False)
    monkeypatch.undo()
    half_done = open(os.path.join(save, "train.csv")).read()
    assert half_done != open(os.path.join(reference, "train.csv")).read()
    assert not os.path.exists(os.path.join(save, "prepare_options.json"))
    assert not [n for n in os.listdir(save) if n.startswith(".")]  # no temporary files

    summary = prepare_voxceleb(root, save, trials, verbose=False)
    assert summary["skipped"] is False
    for name in ("train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.txt"):
        assert open(os.path.join(save, name)).read() == open(os.path.join(reference, name)).read()


def test_option_errors_are_clear(tmp_path):
    root, trials, save = _vox_setup(tmp_path)
    with pytest.raises(ValueError, match="verification_file is None"):
        prepare_voxceleb(root, save)
    with pytest.raises(ValueError, match="check_audio"):
        prepare_voxceleb(root, save, trials, check_audio="yes")
    with pytest.raises(FileNotFoundError, match="no 'wav' folder"):
        prepare_voxceleb(str(tmp_path), save, trials)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_voxceleb(str(tmp_path / "nowhere"), save, trials)
    assert prepare_voxceleb("unused", save, skip_prep=True) == {"skipped": True}


def test_csvs_load_in_speechbrain_and_with_load_audio(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    root, trials, save = _vox_setup(tmp_path)
    prepare_voxceleb(root, save, trials, split_ratio=(100, 0), verbose=False)
    data = DynamicItemDataset.from_csv(os.path.join(save, "train.csv"))

    def audio(wav, start, stop):
        return load_audio(wav, int(start), int(stop))

    data.add_dynamic_item(audio, takes=["wav", "start", "stop"], provides="sig")
    data.set_output_keys(["id", "sig", "duration", "wav", "start", "stop"])
    for item in data:
        start, stop = int(item["start"]), int(item["stop"])
        reference, _ = sf.read(item["wav"], start=start, stop=stop, dtype="float32")
        assert torch.equal(item["sig"], torch.from_numpy(reference))
        assert isinstance(item["duration"], float)
        assert item["duration"] * SR == sf.info(item["wav"]).frames


def test_command_line(tmp_path, capsys):
    root = _folder_corpus(tmp_path / "corpus", ["a", "b", "c", "d"], 3)
    save = str(tmp_path / "save")
    assert prep.main(["folder", root, save, "--test-speakers", "c,d", "--seg-dur", "0.5"]) == 0
    assert "trials.txt: 12 trials generated" in capsys.readouterr().out
    train = _rows_by_id(os.path.join(save, "train.csv"))
    assert "a--u0_0_8000" in train and "a--u0_8000_16000" in train
    with pytest.raises(SystemExit) as caught:
        prep.main(["folder", root, save])
    assert caught.value.code == 2
    assert "test speakers" in capsys.readouterr().err


def test_atomic_writers_round_trip_and_leave_no_partial_file(tmp_path):
    path = str(tmp_path / "x.csv")
    atomic_write_csv(path, [["a,b", 1.5], {"ID": 'q"uote', "v": 2}], ["ID", "v"])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"ID": "a,b", "v": "1.5"}, {"ID": 'q"uote', "v": "2"}]
    with pytest.raises(ValueError, match="x.csv: row 2 has 1 values"):
        atomic_write_csv(path, [["a", 1], ["b"]], ["ID", "v"])
    with open(path, newline="") as handle:  # the previous content survived
        assert len(list(csv.DictReader(handle))) == 2
    with atomic_open(str(tmp_path / "b.bin"), "wb") as handle:
        handle.write(b"\x00\x01")
    assert open(tmp_path / "b.bin", "rb").read() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "x.csv"]


def test_read_trial_list_reports_missing_files_where_looked(tmp_path):
    path = _trial_file(tmp_path, ["1 a.wav b.wav"])
    with pytest.raises(ValueError, match=r"line 1: file not found: b.wav \(looked under /data\)"):
        read_trial_list(path, resolve=lambda rel: rel == "a.wav", where="/data")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_trial_list(str(tmp_path / "missing.txt"))


@pytest.mark.skipif(not os.path.isdir(SPEECH_COMMANDS), reason="Speech Commands test split absent")
def test_speech_commands_subset_through_symlinks(tmp_path):
    counts = {
        d: len(os.listdir(os.path.join(SPEECH_COMMANDS, d)))
        for d in sorted(os.listdir(SPEECH_COMMANDS))
        if os.path.isdir(os.path.join(SPEECH_COMMANDS, d))
    }
    test = [s for s, n in counts.items() if s[0] in "0123" and n >= 5][:3]
    train = [s for s, n in counts.items() if s[0] not in "0123" and n >= 5][:3]
    root = tmp_path / "sc"
    for speaker in test + train:
        (root / speaker).mkdir(parents=True)
        for name in sorted(os.listdir(os.path.join(SPEECH_COMMANDS, speaker)))[:5]:
            os.symlink(os.path.join(SPEECH_COMMANDS, speaker, name), root / speaker / name)
    shutil.copy(os.path.join(SPEECH_COMMANDS, "README.md"), root / "README.md")
    save = str(tmp_path / "save")
    summary = prepare_folder_corpus(
        str(root), save, test_speakers=test, min_utts_test=5, split_ratio=(100, 0), verbose=False
    )
    assert summary["n_skipped"] == 0 and summary["files_found"] == 30
    assert (summary["trials"]["target"], summary["trials"]["nontarget"]) == (30, 30)
    train_rows = _rows_by_id(os.path.join(save, "train.csv"))
    assert len(train_rows) == 15 and {r[5] for r in train_rows.values()} == set(train)
    for row in train_rows.values():
        assert row[1] == "1.0" and row[3:5] == ["0", "16000"]
        assert row[2].startswith(str(root))
    row = next(iter(train_rows.values()))
    assert load_audio(row[2], int(row[3]), int(row[4])).shape == (16000,)
