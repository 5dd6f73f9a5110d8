"""Diarization: windows, clustering, segments, RTTM, the pipeline on real speech, the command."""

import glob
import os

import numpy as np
import pytest
import torch

from fefa_speechbrain.cli import main
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.inference.diarization import (
    Diarization,
    Diarizer,
    Segment,
    cluster,
    segments_from_windows,
    windows,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "pretrained", "fefa-ecapa128-speechcommands")
EXAMPLE = os.path.join(MODEL, "example")
PERSIAN = "/work/shared/data/cv_persian_sentences"
if not os.path.isdir(PERSIAN):
    PERSIAN = os.path.join(os.path.dirname(REPO), "shared", "data", "cv_persian_sentences")


@pytest.fixture(scope="module")
def diarizer():
    return Diarizer.from_model(MODEL)


def _example_recording():
    """speaker 1, pause, speaker 2, long pause, speaker 1 (the shipped example words)."""
    a, b, c = (load_audio(os.path.join(EXAMPLE, f"{name}.flac"))
               for name in ("speaker1_down", "speaker2_left", "speaker1_go"))
    return torch.cat([a, torch.zeros(8000), b, torch.zeros(24000), c])


def test_windows_cover_every_region_and_end_at_its_end():
    spans = windows([(0, 1000), (2000, 2300), (3000, 3050)], window=400, shift=200, min_window=100)
    assert spans == [(0, 400), (200, 600), (400, 800), (600, 1000), (2000, 2300)]


def test_clustering_finds_the_speakers_deterministically():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 32))
    rows = np.concatenate([c + 0.3 * rng.normal(size=(10, 32)) for c in centres])
    order = rng.permutation(30)
    labels = cluster(rows[order])
    truth = np.repeat([0, 1, 2], 10)[order]
    assert len(set(labels.tolist())) == 3
    for name in range(3):  # each found cluster is one true speaker
        assert len(set(truth[labels == name].tolist())) == 1
    assert labels[0] == 0 and (cluster(rows[order]) == labels).all()
    assert set(cluster(rows[order], num_speakers=2).tolist()) == {0, 1}
    assert set(cluster(rows[order], num_speakers=1).tolist()) == {0}
    with pytest.raises(ValueError, match="at least 1"):
        cluster(rows, num_speakers=0)


def test_segments_split_between_window_centres_and_join_one_speaker():
    spans = [(0, 200), (100, 300), (200, 400), (1000, 1200)]
    found = segments_from_windows(spans, [1, 1, 0, 0], [(0, 400), (1000, 1200)], sample_rate=100)
    assert found == [Segment(0.0, 2.5, "SPEAKER_01"), Segment(2.5, 4.0, "SPEAKER_00"),
                     Segment(10.0, 12.0, "SPEAKER_00")]


def test_rttm_lines_are_nist_rttm(tmp_path):
    result = Diarization([Segment(0.5, 1.25, "SPEAKER_00"), Segment(2.0, 3.0, "SPEAKER_01")], "call")
    path = tmp_path / "call.rttm"
    result.write_rttm(path)
    fields = [line.split() for line in path.read_text().splitlines()]
    assert [f[0] for f in fields] == ["SPEAKER", "SPEAKER"] and {len(f) for f in fields} == {10}
    assert [(f[1], float(f[3]), float(f[4]), f[7]) for f in fields] == [
        ("call", 0.5, 0.75, "SPEAKER_00"), ("call", 2.0, 1.0, "SPEAKER_01")]


def test_the_shipped_model_tells_the_example_speakers_apart(diarizer):
    result = diarizer(_example_recording())
    assert len(result) == 3 and len(result.speakers) == 2
    first, second, third = result
    assert first.speaker == third.speaker != second.speaker
    assert first.end <= 1.0 + 1e-6 and 1.5 <= second.start < second.end <= 2.5 and third.start >= 4.0
    assert diarizer(torch.zeros(48000)) == []  # no speech, no speaker


def _overlap(reference, hypothesis):
    """Speech time given the right speaker under the best one-to-one mapping, / speech time."""
    from scipy.optimize import linear_sum_assignment

    ref_names = sorted({s for _, _, s in reference})
    hyp_names = sorted({s.speaker for s in hypothesis})
    shared = np.zeros((len(ref_names), len(hyp_names)))
    for start, end, who in reference:
        for seg in hypothesis:
            both = min(end, seg.end) - max(start, seg.start)
            if both > 0:
                shared[ref_names.index(who), hyp_names.index(seg.speaker)] += both
    rows, cols = linear_sum_assignment(-shared)
    return shared[rows, cols].sum() / sum(end - start for start, end, _ in reference)


@pytest.mark.skipif(not os.path.isdir(PERSIAN), reason="needs ../shared/data/cv_persian_sentences")
def test_three_speakers_of_read_sentences(diarizer):
    from fefa_speechbrain.inference.vad import speech_regions

    speakers = sorted(glob.glob(os.path.join(PERSIAN, "*", "")))[:3]
    parts, reference, now = [], [], 0.0
    for turn in range(9):
        who = speakers[turn % 3]
        wav = load_audio(sorted(glob.glob(os.path.join(who, "*.flac")))[turn // 3])
        regions = speech_regions(wav)
        reference.append((now + regions[0][0] / 16000, now + regions[-1][1] / 16000, who))
        parts += [wav, torch.zeros(8000)]
        now += (wav.numel() + 8000) / 16000
    result = diarizer(torch.cat(parts))
    assert len(result.speakers) == 3
    assert _overlap(reference, result) >= 0.85



def test_diarize_command_writes_one_rttm_per_recording_on_both_backends(tmp_path, run_cli):
    import soundfile as sf

    recording = tmp_path / "team call.wav"
    sf.write(recording, _example_recording().numpy(), 16000)
    sf.write(tmp_path / "quiet.wav", np.zeros(32000, dtype=np.float32), 16000)
    code, out, _ = run_cli("diarize", MODEL, recording, tmp_path / "quiet.wav",
                        "--output", tmp_path / "torch")
    assert code == 0 and "team call.wav: 2 speakers, 3 segments" in out
    assert "quiet.wav: 0 speakers, 0 segments" in out and "no speech found" in out
    assert (tmp_path / "torch" / "quiet.rttm").read_text() == ""
    code, out, _ = run_cli("diarize", MODEL, recording, "--output", tmp_path / "onnx",
                        "--backend", "onnxruntime")
    assert code == 0
    torch_lines = (tmp_path / "torch" / "team_call.rttm").read_text().splitlines()
    onnx_lines = (tmp_path / "onnx" / "team_call.rttm").read_text().splitlines()
    assert len(torch_lines) == 3 and onnx_lines == torch_lines


def test_diarize_command_refuses_clashing_names_and_bad_windows(tmp_path, run_cli):
    import soundfile as sf

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "call.wav", np.zeros(16000, dtype=np.float32), 16000)
    code, _, err = run_cli("diarize", MODEL, tmp_path / "a" / "call.wav",
                        tmp_path / "b" / "call.wav", "--output", tmp_path / "out")
    assert code == 1 and "would both be written to call.rttm" in err
    code, _, err = run_cli("diarize", MODEL, tmp_path / "a" / "call.wav", "--output",
                        tmp_path / "out", "--window", "1", "--shift", "2")
    assert code == 1 and "--shift 2.0 is longer than --window 1.0" in err
    code, _, err = run_cli("diarize", MODEL, tmp_path / "a" / "call.wav", "--output",
                        tmp_path / "a" / "call.wav")
    assert code == 1 and "is a file" in err
    with pytest.raises(SystemExit):
        main(["diarize", MODEL, "x.wav", "--output", "o", "--num-speakers", "2", "--max-speakers", "3"])
