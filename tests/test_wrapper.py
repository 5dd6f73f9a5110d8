"""FEFAWrapper around SpeechBrain's own embedding models."""
import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram
from fefa_speechbrain.lobes.wrapper import FEFAWrapper


def _small_ecapa(n_in):
    torch.manual_seed(0)
    return ECAPA_TDNN(n_in, channels=[32, 32, 32, 32, 96], attention_channels=16, lin_neurons=24)


@pytest.mark.parametrize(
    "frontend,n_bins",
    [(Fbank(n_mels=80), 80), (Spectrogram(), 257)],
    ids=["fbank80", "spectrogram257"],
)
def test_ecapa_with_fefa(frontend, n_bins):
    wavs = torch.randn(2, 16000)
    feats = FrameNormalization()(frontend(wavs))
    assert feats.shape[-1] == n_bins
    ecapa = _small_ecapa(n_bins).eval()
    model = FEFAWrapper(ecapa, n_bins=n_bins).eval()
    out = model(feats, torch.tensor([1.0, 0.7]))
    assert out.shape == (2, 1, 24)
    # untrained FEFA: exactly the bare model
    torch.testing.assert_close(model(feats), ecapa(feats), rtol=0, atol=1e-5)
    # trained FEFA changes the embedding, and gradients reach it
    model.train()
    with torch.no_grad():
        model.input_fefa.weight.normal_()
        model.input_fefa.bias.normal_()
    model(feats).sum().backward()
    assert model.input_fefa.weight.grad.abs().sum() > 0
    model.eval()
    assert not torch.allclose(model(feats), ecapa(feats), atol=1e-4)


def test_none_is_bare_model_and_multi_refused():
    ecapa = _small_ecapa(80).eval()
    bare = FEFAWrapper(ecapa, n_bins=80, fefa="none")
    assert bare.fefa_modules() == [] and sum(p.numel() for p in bare.parameters()) == sum(
        p.numel() for p in ecapa.parameters()
    )
    extra = sum(p.numel() for p in FEFAWrapper(ecapa, 80).parameters()) - sum(
        p.numel() for p in ecapa.parameters()
    )
    assert extra == 160
    with pytest.raises(ValueError, match="multi"):
        FEFAWrapper(ecapa, n_bins=80, fefa="multi")
    with pytest.raises(ValueError, match="valid"):
        FEFAWrapper(ecapa, n_bins=80, fefa="sometimes")
