"""Audio without speech (silence, noise only) is never "the same speaker"."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from fefa_speechbrain.cli import main
from fefa_speechbrain.inference.vad import has_speech, speech_regions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "pretrained", "fefa-ecapa128-speechcommands")
SPEECH = os.path.join(SHIPPED, "example", "speaker1_down.flac")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nospeech")
    rng = np.random.default_rng(0)
    paths = {"silence": folder / "silence.wav", "silence2": folder / "silence2.wav",
             "noise": folder / "noise.wav"}
    sf.write(paths["silence"], np.zeros(16000, np.float32), 16000)
    sf.write(paths["silence2"], np.zeros(24000, np.float32), 16000)
    sf.write(paths["noise"], (0.05 * rng.standard_normal(16000)).astype(np.float32), 16000)
    return {name: str(path) for name, path in paths.items()}


def test_vad_finds_speech_only_in_speech(files):
    speech = torch.from_numpy(sf.read(SPEECH, dtype="float32")[0])
    assert has_speech(speech) and speech_regions(speech)
    for name in ("silence", "noise"):
        wav = torch.from_numpy(sf.read(files[name], dtype="float32")[0])
        assert not has_speech(wav) and speech_regions(wav) == [], name


def test_verify_refuses_two_silent_files(files, capsys):
    assert main(["verify", SHIPPED, files["silence"], files["silence2"]]) == 1
    out, err = capsys.readouterr()
    assert "same speaker" not in out and "no speech found in" in err and "no decision" in err
    assert main(["verify", SHIPPED, SPEECH, files["noise"]]) == 1
    assert "noise.wav" in capsys.readouterr().err


def test_embed_flags_and_score_leaves_out(files, tmp_path, capsys):
    out = tmp_path / "e.pt"
    assert main(["embed", SHIPPED, SPEECH, files["noise"], "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no speech found in 1 file" in err and files["noise"] in err
    assert SPEECH not in err.split("no speech found", 1)[1]
    trials = tmp_path / "trials.txt"
    other = os.path.join(SHIPPED, "example", "speaker1_go.flac")
    trials.write_text(f"1 {SPEECH} {other}\n0 {SPEECH} {files['noise']}\n")
    scores = tmp_path / "scores.txt"
    assert main(["score", SHIPPED, str(trials), "--audio-root", "/", "--allow-outside-root",
                 "--output", str(scores)]) == 0
    lines = scores.read_text().splitlines()
    assert lines[1].endswith(" nan") and not lines[0].endswith(" nan")
    assert "left out of the EER" in capsys.readouterr().err
