"""Preparation: every path fits the formats it feeds, and nothing is left out silently.

A folder corpus with the awkward cases real corpora have: a name with spaces (quoted in
``trials.txt``, read back by the trial reader and by SpeechBrain's CSV loader), a name
with ``$`` (which SpeechBrain's CSV loader would read as a variable), an .mp3, a link to
nothing, a truncated wav, a folder that cannot be listed, and a training speaker folder
that is a link to a test speaker's folder (test audio must not reach training).
"""

import json
import os

import numpy as np
import soundfile as sf
from speechbrain.dataio.dataio import load_data_csv

from fefa_speechbrain.data import scan
from fefa_speechbrain.data.prepare import prepare_folder_corpus
from fefa_speechbrain.data.trials import read_trial_list

SR = 16000


def _write(path, seconds=1.0, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1
    sf.write(path, noise, SR, subtype="PCM_16")
    return path


def _corpus(root):
    for number, speaker in enumerate(["sp0", "sp1", "sp2", "test0", "test1"]):
        for utt in range(3):
            _write(os.path.join(root, speaker, f"u{utt}.wav"), seed=10 * number + utt)
    spaced = _write(os.path.join(root, "test0", "zoom in_01.wav"), seed=99)
    dollar = _write(os.path.join(root, "sp0", "take$1.wav"), seed=98)
    mp3 = os.path.join(root, "sp1", "song.mp3")
    open(mp3, "wb").write(b"ID3" + bytes(200))
    dangling = os.path.join(root, "sp1", "gone.wav")
    os.symlink(os.path.join(root, "nowhere.wav"), dangling)
    cut = _write(os.path.join(root, "sp2", "cut.wav"), seconds=1.0, seed=97)
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) - 8000])
    os.makedirs(os.path.join(root, "sp2", "locked"))
    os.symlink(os.path.join(root, "test1"), os.path.join(root, "sp9"))  # an alias of a test speaker
    return {"spaced": spaced, "dollar": dollar, "mp3": mp3, "dangling": dangling, "cut": cut,
            "locked": os.path.join(root, "sp2", "locked")}


def test_every_file_left_out_has_a_line_and_names_fit_every_format(tmp_path, monkeypatch):
    root = str(tmp_path / "corpus")
    paths = _corpus(root)
    real_scandir = os.scandir

    def scandir(folder):  # as root every folder can be listed: simulate one that cannot
        if os.fspath(folder) == paths["locked"]:
            raise PermissionError(13, "Permission denied", folder)
        return real_scandir(folder)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    save = tmp_path / "prep"
    prepare_folder_corpus(
        root, str(save), test_speakers=_speaker_list(tmp_path, ["test0", "test1"]),
        check_audio="header", seg_dur=1.0, verbose=False,
    )
    report = json.loads((save / "prepare_report.json").read_text())
    reasons = {p["path"]: (p["action"], " ".join(p["reasons"])) for p in report["problems"]}
    assert reasons[paths["dollar"]][1].startswith("'$1.wav' in the name: SpeechBrain's CSV")
    assert reasons[paths["mp3"]][1].startswith("extension .mp3 is not read")
    assert reasons[paths["dangling"]][1] == f"a link to {root}/nowhere.wav, which does not exist"
    assert reasons[paths["locked"]][1] == "folder cannot be listed: Permission denied"
    assert reasons[paths["cut"]] == (
        "kept with warning",
        "truncated: the header declares 16000 samples, the file holds 12000 (kept with those)",
    )
    aliases = [p for p in reasons if p.startswith(os.path.join(root, "sp9"))]
    assert len(aliases) == 3 and all(
        reasons[p][1].startswith("the same file as held-out test1/") for p in aliases
    )
    assert all(action == "skipped" for p, (action, _) in reasons.items() if p != paths["cut"])

    # no test audio in training, under any name; no '$' row; the CSVs load in SpeechBrain
    train = load_data_csv(str(save / "train.csv"), replacements={})
    train_real = {os.path.realpath(row["wav"]) for row in train.values()}
    test_real = {os.path.realpath(os.path.join(root, s, f"u{u}.wav"))
                 for s in ("test0", "test1") for u in range(3)}
    assert not train_real & test_real
    assert {row["spk_id"] for row in train.values()} == {"sp0", "sp1", "sp2"}
    load_data_csv(str(save / "test.csv"), replacements={})

    # the spaced name is quoted in trials.txt and read back as one path
    text = (save / "trials.txt").read_text()
    assert "'test0/zoom in_01.wav'" in text
    trials = read_trial_list(str(save / "trials.txt"), resolve=lambda rel: os.path.isfile(
        os.path.join(root, rel)))
    assert "test0/zoom in_01.wav" in {t.enrol for t in trials} | {t.test for t in trials}


def _speaker_list(tmp_path, speakers):
    path = tmp_path / "test_speakers.txt"
    path.write_text("\n".join(speakers) + "\n")
    return str(path)


def test_disk_and_encoding_errors_name_the_file_and_leave_it_intact(tmp_path, monkeypatch):
    import errno

    import pytest
    import torch

    from fefa_speechbrain import atomic
    from fefa_speechbrain.atomic import atomic_write_text
    from fefa_speechbrain.checkpoints import AtomicCheckpointer

    target = tmp_path / "train.csv"
    target.write_text("old\n")
    with pytest.raises(ValueError, match=rf"{target}: cannot write '\\udce9' as utf-8"):
        atomic_write_text(target, "caf\udce9.wav\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match=rf"No space left on device \(writing {target}\)"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]
    monkeypatch.undo()

    def no_space(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")

    checkpointer = AtomicCheckpointer(tmp_path / "save", recoverables={"m": torch.nn.Linear(2, 2)})
    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(RuntimeError, match=rf"saving a checkpoint in {tmp_path / 'save'} failed"):
        checkpointer.save_checkpoint()
