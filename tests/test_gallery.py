"""Enrolment and open-set identification: the gallery file and the commands."""

import json
import os

import numpy as np
import pytest

from fefa_speechbrain.inference.gallery import Gallery, GalleryError, model_fingerprint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "pretrained", "fefa-ecapa128-speechcommands")
EXAMPLE = os.path.join(MODEL, "example")


def _gallery(tmp_path):
    gallery = Gallery("f" * 64, "model-a")
    gallery.enrol("alice", [[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]], ["a1.wav", "a2.wav"])
    gallery.enrol("bob", [[0.0, 0.0, 2.0]], ["b1.wav"])
    path = tmp_path / "gallery.json"
    gallery.save(path)
    return gallery, path


def test_enrolment_is_the_mean_of_unit_embeddings_and_survives_a_round_trip(tmp_path):
    gallery, path = _gallery(tmp_path)
    expected = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)  # scale of a clip does not weigh it
    np.testing.assert_allclose(gallery.speakers["alice"]["embedding"], expected)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "fefa-speechbrain-gallery" and data["model"]["fingerprint"] == "f" * 64
    assert data["speakers"]["alice"]["clips"] == ["a1.wav", "a2.wav"]
    loaded = Gallery.load(path, "f" * 64)
    probe = [0.2, 0.9, 0.1]
    assert [name for name, _ in loaded.rank(probe)] == ["alice", "bob"]
    assert [s for _, s in loaded.rank(probe)] == pytest.approx([s for _, s in gallery.rank(probe)])
    assert not [name for name in os.listdir(tmp_path) if name != "gallery.json"]  # no temp left


def test_open_set_identification_answers_none_below_the_threshold(tmp_path):
    gallery, _ = _gallery(tmp_path)
    who, ranking = gallery.identify([0.0, 0.1, 1.0], threshold=0.5, top_k=1)
    assert who == "bob" and len(ranking) == 1 and ranking[0][1] == pytest.approx(0.995, abs=1e-3)
    who, ranking = gallery.identify([-1.0, -1.0, -1.0], threshold=0.0)
    assert who is None and len(ranking) == 2


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    (json.dumps({"speakers": {}}), "is not a gallery file"),
    (json.dumps({"format": "fefa-speechbrain-gallery", "version": 7}), "gallery version 7"),
    (json.dumps({"format": "fefa-speechbrain-gallery", "version": 1, "model": {},
                 "speakers": {"x": {"embedding": [1.0, float("nan")]}}}), "no valid embedding"),
    (json.dumps({"format": "fefa-speechbrain-gallery", "version": 1, "model": {},
                 "speakers": {"x": {"embedding": [1.0]}, "y": {"embedding": [1.0, 0.0]}}}),
     "different sizes"),
])
def test_damaged_galleries_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GalleryError, match=message) as error:
        Gallery.load(path)
    assert str(path) in str(error.value)


def test_a_gallery_of_another_model_is_refused(tmp_path):
    _, path = _gallery(tmp_path)
    with pytest.raises(GalleryError, match="made with another model"):
        Gallery.load(path, "0" * 64)


def test_fingerprint_follows_the_weights():
    import torch

    from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram
    from fefa_speechbrain.lobes.vggm import VGGM

    modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
               "embedding_model": VGGM(width=0.125)}
    before = model_fingerprint(modules)
    with torch.no_grad():
        next(modules["embedding_model"].parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(modules) != before



def test_enroll_and_identify_on_the_shipped_examples(tmp_path, run_cli):
    gallery = tmp_path / "people.json"
    code, out, _ = run_cli("enroll", MODEL, "one", os.path.join(EXAMPLE, "speaker1_down.flac"),
                        "--gallery", gallery)
    assert code == 0 and "enrolled one from 1 file" in out
    code, out, _ = run_cli("enroll", MODEL, "two", os.path.join(EXAMPLE, "speaker2_left.flac"),
                        "--gallery", gallery)
    assert code == 0 and "(2 speakers)" in out
    code, _, err = run_cli("enroll", MODEL, "two", os.path.join(EXAMPLE, "speaker2_left.flac"),
                        "--gallery", gallery)
    assert code == 1 and "already enrolled" in err and "--replace" in err
    probe = os.path.join(EXAMPLE, "speaker1_go.flac")  # the other word of speaker 1
    code, out, _ = run_cli("identify", MODEL, probe, "--gallery", gallery, "--json")
    result = json.loads(out)
    assert code == 0 and result["speaker"] == "one"
    assert [row["speaker"] for row in result["top"]] == ["one", "two"]
    assert result["top"][0]["score"] >= result["threshold"] > result["top"][1]["score"]
    code, out, _ = run_cli("identify", MODEL, probe, "--gallery", gallery, "--threshold", "0.99",
                        "--exit-code")
    assert code == 2 and out.startswith("none of them: the best match, one, scores")


def test_identify_refuses_a_gallery_of_another_model_and_silence(tmp_path, run_cli):
    import soundfile as sf

    gallery = tmp_path / "people.json"
    assert run_cli("enroll", MODEL, "one", os.path.join(EXAMPLE, "speaker1_down.flac"),
                "--gallery", gallery)[0] == 0
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000, dtype=np.float32), 16000)
    code, _, err = run_cli("identify", MODEL, silence, "--gallery", gallery)
    assert code == 1 and "no speech found" in err
    data = json.loads(gallery.read_text(encoding="utf-8"))
    data["model"]["fingerprint"] = "0" * 64
    gallery.write_text(json.dumps(data), encoding="utf-8")
    code, _, err = run_cli("identify", MODEL, os.path.join(EXAMPLE, "speaker1_go.flac"),
                        "--gallery", gallery)
    assert code == 1 and "made with another model" in err and str(gallery) in err
    code, _, err = run_cli("identify", MODEL, silence, "--gallery", tmp_path / "none.json")
    assert code == 1 and "no gallery file" in err
