"""The models on another device (CUDA) against the CPU: run by scripts/gpu_check.sh.

``FEFA_TEST_DEVICE=cuda pytest tests/test_device_parity.py``: every backbone with every
FEFA placement (and FEFA before SpeechBrain's ECAPA-TDNN), the front-end and both
normalizations: the same embeddings as on the CPU (TF32 off), finite gradients, and a
padded row equal to the row alone. Skipped when ``FEFA_TEST_DEVICE`` is unset or cpu.
"""

import os

import pytest
import torch

from fefa_speechbrain.lobes.features import Spectrogram, feature_normalization
from test_graph_export import BACKBONES, random_model

DEVICE = os.environ.get("FEFA_TEST_DEVICE", "cpu")
CASES = [(name, "single") for name in BACKBONES] + [
    (name, fefa) for name in ("thin_resnet34_tap", "vggm_tap", "thin_seresnet34_tap") for fefa in ("none", "multi")]
TOLERANCE = 1e-4  # max abs difference / max abs value, fp32 without TF32

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu", reason="set FEFA_TEST_DEVICE=cuda (scripts/gpu_check.sh runs these on a GPU)")


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def features(norm):
    generator = torch.Generator().manual_seed(3)
    wavs = 0.1 * torch.randn(3, 24000, generator=generator)
    lengths = torch.tensor([1.0, 0.6, 0.8])
    spec = Spectrogram(log=True)
    feats = spec(wavs)
    feat_lens = spec.frame_lengths(lengths, wavs.shape[1])
    return feature_normalization(norm)(feats, feat_lens), feat_lens


def relative(actual, expected):
    return ((actual.cpu() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("name, fefa", CASES)
@pytest.mark.parametrize("norm", ["frame", "utterance"])
def test_same_embeddings_and_gradients_on_the_device(name, fefa, norm):
    feats, lengths = features(norm)
    model = random_model(name, fefa)
    with torch.no_grad():
        expected = model(feats, lengths)
    moved = random_model(name, fefa).to(DEVICE)
    with torch.no_grad():
        actual = moved(feats.to(DEVICE), lengths.to(DEVICE))
    assert relative(actual, expected) < TOLERANCE
    moved.train()
    loss = moved(feats.to(DEVICE), lengths.to(DEVICE)).pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in moved.parameters() if p.grad is not None)


def test_front_end_on_the_device():
    wavs = torch.randn(2, 16000)
    spec = Spectrogram(log=True)
    assert relative(spec.to(DEVICE)(wavs.to(DEVICE)), spec.cpu()(wavs)) < 1e-4
