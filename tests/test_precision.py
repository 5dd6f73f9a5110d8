"""bf16 autocast on CPU (SpeechBrain's ``--precision=bf16``): every backbone and FEFA.

Two promises: a model's bf16 embeddings agree with its fp32 embeddings (cosine
similarity of at least ``MIN_COSINE`` per utterance: bf16 keeps 8 bits of mantissa, so
about 2-3 significant digits per layer), and a short bf16 training is finite and learns.
"""
import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram, feature_lengths
from fefa_speechbrain.lobes.fefa import FEFA
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
from fefa_speechbrain.lobes.thin_seresnet import ThinSEResNet34
from fefa_speechbrain.lobes.vggm import VGGM
from fefa_speechbrain.lobes.wrapper import FEFAWrapper

MIN_COSINE = 0.99


def _ecapa(fefa):
    return FEFAWrapper(ECAPA_TDNN(257, channels=[32, 32, 32, 32, 96], lin_neurons=24),
                       n_bins=257, fefa=fefa)


MODELS = {
    "vggm": lambda fefa: VGGM(fefa=fefa, aggregation="tap", emb_dim=24, width=0.125),
    "tr34_tap": lambda fefa: ThinResNet34(fefa=fefa, aggregation="tap", emb_dim=24, width=0.125),
    "tr34_gvlad": lambda fefa: ThinResNet34(fefa=fefa, aggregation="gvlad", emb_dim=24,
                                            width=0.125),
    "tr34se_tap": lambda fefa: ThinSEResNet34(fefa=fefa, aggregation="tap", emb_dim=24,
                                              width=0.125),
    "ecapa": _ecapa,
}
CASES = [(name, fefa) for name in MODELS for fefa in ("none", "single", "multi")
         if not (name == "ecapa" and fefa == "multi")]


def _features(wavs, lens):
    spectrogram = Spectrogram()
    feats = spectrogram(wavs)
    feat_lens = feature_lengths(spectrogram, lens, wavs.shape[1])
    return FrameNormalization()(feats, feat_lens), feat_lens


def _moved_fefa(model, seed=5):
    """FEFA parameters off their identity init, so that the attention matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FEFA):
                for p in module.parameters():
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("name,fefa", CASES)
def test_bf16_embeddings_agree_with_fp32(name, fefa):
    torch.manual_seed(0)
    model = _moved_fefa(MODELS[name](fefa)).eval()
    wavs = 0.1 * torch.randn(3, 16000)
    lens = torch.tensor([1.0, 0.8, 0.55])
    feats, feat_lens = _features(wavs, lens)
    with torch.no_grad():
        reference = model(feats, feat_lens).squeeze(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(feats, feat_lens).squeeze(1)
    assert low.dtype in (torch.bfloat16, torch.float32)
    assert torch.isfinite(low.float()).all()
    cosine = torch.nn.functional.cosine_similarity(reference, low.float(), dim=-1)
    assert cosine.min() >= MIN_COSINE, f"{name}/{fefa}: cosine {cosine.tolist()}"
    # the check can fail: a different model's embeddings are far from these
    torch.manual_seed(1)
    other = _moved_fefa(MODELS[name](fefa), seed=9).eval()
    with torch.no_grad():
        unrelated = other(feats, feat_lens).squeeze(1)
    assert torch.nn.functional.cosine_similarity(reference, unrelated, dim=-1).min() < MIN_COSINE


@pytest.mark.parametrize("name", ["tr34_tap", "ecapa"])
def test_short_bf16_training_is_finite_and_learns(name):
    """12 Adam steps in bf16 autocast on 4 speakers x 2 fixed 0.5 s utterances: loss falls."""
    torch.manual_seed(0)
    model = MODELS[name]("single")
    head = torch.nn.Linear(24, 4)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=5e-3)
    g = torch.Generator().manual_seed(2)
    voices = torch.randn(4, 1, 8000, generator=g).cumsum(-1) * 0.01  # 4 "speakers"
    wavs = (voices + 0.05 * torch.randn(4, 2, 8000, generator=g)).reshape(8, 8000)
    labels = torch.arange(4).repeat_interleave(2)
    feats, feat_lens = _features(wavs, torch.ones(8))
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(model(feats, feat_lens).squeeze(1))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    fefa = next(m for m in model.modules() if isinstance(m, FEFA))
    assert any(p.abs().max() > 0 for p in fefa.parameters()), "FEFA did not train"
