"""The shipped pretrained model: loads offline with SpeechBrain, decides its example pairs."""
import json
import os

import pytest
import yaml
from speechbrain.inference.speaker import SpeakerRecognition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "pretrained", "fefa-ecapa128-speechcommands")
EXAMPLE = os.path.join(FOLDER, "example")


@pytest.fixture(scope="module")
def model():
    return SpeakerRecognition.from_hparams(source=FOLDER, savedir=None,
                                           run_opts={"device": "cpu"})


def eer_threshold():
    with open(os.path.join(FOLDER, "config.json"), encoding="utf-8") as fin:
        return json.load(fin)["thresholds"]["eer"]["value"]


def score(model, a, b):
    value, _ = model.verify_files(os.path.join(EXAMPLE, a), os.path.join(EXAMPLE, b))
    return float(value)


def test_same_and_different_speaker_pairs_decided_at_the_stored_threshold(model):
    threshold = eer_threshold()
    assert 0.0 < threshold < 1.0
    same = score(model, "speaker1_down.flac", "speaker1_go.flac")
    different = [score(model, "speaker1_down.flac", "speaker2_left.flac"),
                 score(model, "speaker1_go.flac", "speaker2_left.flac")]
    assert same > threshold, (same, threshold)
    assert max(different) < threshold, (different, threshold)


def test_embeddings_have_the_card_shape_and_differ_by_speaker(model):
    import torch

    wavs = [model.load_audio(os.path.join(EXAMPLE, name), savedir=EXAMPLE)
            for name in ("speaker1_down.flac", "speaker2_left.flac")]
    emb = model.encode_batch(torch.stack(wavs), torch.ones(2))
    assert emb.shape == (2, 1, 192)
    assert torch.isfinite(emb).all()
    cosine = torch.nn.functional.cosine_similarity(emb[0, 0], emb[1, 0], dim=0)
    assert cosine < 0.99


def test_card_front_matter_size_and_no_local_paths():
    with open(os.path.join(FOLDER, "README.md"), encoding="utf-8") as fin:
        text = fin.read()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "speechbrain"
    assert front["license"] == "cc-by-4.0"
    assert "google/speech_commands" in front["datasets"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"eer", "mindcf"}
    total = 0
    for base, _, files in os.walk(FOLDER):
        for name in files:
            path = os.path.join(base, name)
            total += os.path.getsize(path)
            if name.endswith((".md", ".json", ".yaml", ".txt")):
                with open(path, encoding="utf-8") as fin:
                    content = fin.read()
                for local in ("/work/", "/tmp/", "/home/", "/root/"):
                    assert local not in content, f"{path} names a local path ({local})"
    assert total < 10 * 1024 * 1024
