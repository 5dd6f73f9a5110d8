"""Every pretrained folder: loads offline with SpeechBrain, decides its example pairs."""
import json
import os

import pytest
import yaml
from speechbrain.inference.speaker import SpeakerRecognition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained")
FOLDERS = sorted(name for name in os.listdir(PRETRAINED)
                 if os.path.isfile(os.path.join(PRETRAINED, name, "hyperparams.yaml")))
LIMIT_BYTES = 25 * 10 ** 6  # the whole of pretrained/ (issue 26: the zoo's 25 MB)


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request):
    return os.path.join(PRETRAINED, request.param)


@pytest.fixture(scope="module")
def model(folder):
    return SpeakerRecognition.from_hparams(source=folder, savedir=None,
                                           run_opts={"device": "cpu"})


def config(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as fin:
        return json.load(fin)


def score(model, folder, a, b):
    example = os.path.join(folder, "example")
    value, _ = model.verify_files(os.path.join(example, a), os.path.join(example, b))
    return float(value)


def test_the_zoo_is_there():
    assert "fefa-ecapa128-speechcommands" in FOLDERS
    assert len(FOLDERS) >= 5, FOLDERS


def test_same_and_different_speaker_pairs_decided_at_the_stored_threshold(model, folder):
    threshold = config(folder)["thresholds"]["eer"]["value"]
    assert 0.0 < threshold < 1.0
    same = score(model, folder, "speaker1_down.flac", "speaker1_go.flac")
    different = [score(model, folder, "speaker1_down.flac", "speaker2_left.flac"),
                 score(model, folder, "speaker1_go.flac", "speaker2_left.flac")]
    assert same > threshold, (same, threshold)
    assert same > max(different), (same, different)
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as fin:
        card = " ".join(fin.read().split())
    pairs = ("`speaker1_down`/`speaker2_left`", "`speaker1_go`/`speaker2_left`")
    for pair, value in zip(pairs, different):
        if value >= threshold:  # a wrong decision is allowed only where the card says so
            assert f"{pair} (different speakers) cosine {value:.2f}, decided \"same speaker\": a false accept" in card, (pair, value, threshold)


def test_embeddings_have_the_card_shape_and_differ_by_speaker(model, folder):
    import torch

    example = os.path.join(folder, "example")
    wavs = [model.load_audio(os.path.join(example, name), savedir=example)
            for name in ("speaker1_down.flac", "speaker2_left.flac")]
    emb = model.encode_batch(torch.stack(wavs), torch.ones(2))
    assert emb.shape == (2, 1, config(folder)["embedding_dim"])
    assert torch.isfinite(emb).all()
    cosine = torch.nn.functional.cosine_similarity(emb[0, 0], emb[1, 0], dim=0)
    assert cosine < 0.99


def test_card_front_matter_and_no_local_paths(folder):
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as fin:
        text = fin.read()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "speechbrain"
    assert front["license"] == "cc-by-4.0"
    assert "google/speech_commands" in front["datasets"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"eer", "mindcf"}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            if name.endswith((".md", ".json", ".yaml", ".txt")):
                with open(path, encoding="utf-8") as fin:
                    content = fin.read()
                for local in ("/work/", "/tmp/", "/home/", "/root/"):
                    assert local not in content, f"{path} names a local path ({local})"


def test_pretrained_stays_within_its_size_limit():
    total = sum(os.path.getsize(os.path.join(base, name))
                for base, _, files in os.walk(PRETRAINED) for name in files)
    assert total < LIMIT_BYTES, f"pretrained/ holds {total / 10 ** 6:.1f} MB"


def test_the_onnx_graph_when_shipped_matches_speechbrain(model, folder):
    graph = os.path.join(folder, "embedding.onnx")
    if not os.path.isfile(graph):
        pytest.skip(f"{os.path.basename(folder)} ships no ONNX graph")
    import numpy as np
    import onnxruntime
    import torch
    from fefa_speechbrain.graph_export import PARITY_TOLERANCE

    example = os.path.join(folder, "example")
    wav = model.load_audio(os.path.join(example, "speaker1_down.flac"), savedir=example)
    expected = model.encode_batch(wav[None], torch.ones(1))[:, 0].numpy()
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"wavs": wav[None].numpy().astype(np.float32),
                                "lengths": np.ones(1, np.float32)})
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE * np.abs(expected).max()


def test_every_folder_is_in_both_zoo_tables_and_its_attention_is_linked():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fin:
        readme = fin.read()
    with open(os.path.join(PRETRAINED, "README.md"), encoding="utf-8") as fin:
        zoo = fin.read()
    for name in FOLDERS:
        assert f"`{name}`" in zoo and f"`{name}`" in readme, name
        png = f"pretrained/{name}/attention.png"
        assert os.path.isfile(os.path.join(ROOT, png)), png
        assert f"({png})" in readme, f"README.md does not link {png}"
        with open(os.path.join(PRETRAINED, name, "README.md"), encoding="utf-8") as fin:
            assert "](attention.png)" in fin.read(), f"{name}'s card shows no attention"
