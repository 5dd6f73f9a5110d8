"""embed's memory is bounded: batches by total samples, long recordings in windows."""

import numpy as np
import soundfile as sf
import torch

from fefa_speechbrain.inference import embedder as inference
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, file_batches
from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram


def _modules():
    return {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
            "embedding_model": lambda feats, lengths: feats.mean(1, keepdim=True)}


def test_batches_hold_one_length_and_bounded_samples(tmp_path):
    paths = []
    for row, seconds in enumerate((1.0, 1.0, 1.0, 2.0, 2.0, 3.0)):
        path = tmp_path / f"{row}.wav"
        sf.write(path, np.full(int(16000 * seconds), 0.01 * (row + 1), np.float32), 16000)
        paths.append(str(path))
    batches = list(file_batches(paths, batch_size=16, max_samples=2 * 16000))
    for names, signals in batches:
        assert len({s.shape[0] for s in signals}) == 1
        assert len(signals) == 1 or len(signals) * signals[0].shape[0] <= 2 * 16000
    assert sorted(n for names, _ in batches for n in names) == sorted(paths)
    assert [len(names) for names, _ in batches] == [2, 1, 1, 1, 1]


def test_long_recording_is_embedded_in_windows_of_its_speech(tmp_path, monkeypatch):
    speech = sf.read("pretrained/fefa-ecapa128-speechcommands/example/speaker1_down.flac",
                     dtype="float32")[0]
    pause = np.zeros(16000 * 4, np.float32)
    recording = np.concatenate([np.concatenate([speech, pause])] * 14)  # 70 s, 14 s of it speech
    path = tmp_path / "long.wav"
    sf.write(path, recording, 16000)
    seen = []
    original = SpeakerEmbedder.embed

    def recording_embed(self, wavs, lengths=None):
        seen.append(wavs.shape[1])
        return original(self, wavs, lengths)

    monkeypatch.setattr(SpeakerEmbedder, "embed", recording_embed)
    monkeypatch.setattr(inference, "WINDOW_SECONDS", 5.0)
    result = SpeakerEmbedder(_modules()).embed_files([str(path)])
    assert str(path) in result and not result.no_speech
    assert max(seen) <= 5 * 16000 and len(seen) >= 2  # windows, not the 70 s file
    assert 4 * 16000 < sum(seen) <= 14 * 16000  # the spoken parts of the 14 clips, no pause


def test_long_recording_without_speech_gets_no_embedding(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000 * 40, np.float32), 16000)
    result = SpeakerEmbedder(_modules()).embed_files([str(path)])
    assert result.no_speech == [str(path)] and str(path) not in result
