"""ONNX and TorchScript graphs of every backbone and FEFA placement: parity with PyTorch.

Tiny models (width 0.125) with random FEFA parameters (non-uniform attention), exported
from a 3 s padded batch of 2 and run on batches and lengths the export never saw,
including inputs shorter than the model's minimum number of frames.
"""

import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from fefa_speechbrain.graph_export import GraphModel, example_features, export_graph
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
from fefa_speechbrain.lobes.thin_seresnet import ThinSEResNet34
from fefa_speechbrain.lobes.vggm import VGGM
from fefa_speechbrain.lobes.wrapper import FEFAWrapper

MAX_REL_DIFF = 1e-5  # max abs difference / max abs embedding value
BACKBONES = {
    "thin_resnet34_tap": lambda fefa: ThinResNet34(aggregation="tap", fefa=fefa, width=0.125),
    "thin_resnet34_gvlad": lambda fefa: ThinResNet34(aggregation="gvlad", fefa=fefa, width=0.125),
    "thin_resnet34_asp": lambda fefa: ThinResNet34(aggregation="asp", fefa=fefa, width=0.125),
    "thin_seresnet34_tap": lambda fefa: ThinSEResNet34(aggregation="tap", fefa=fefa, width=0.125),
    "vggm_tap": lambda fefa: VGGM(fefa=fefa, width=0.125),
    "ecapa": lambda fefa: FEFAWrapper(
        ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8, lin_neurons=16),
        257, fefa=fefa,
    ),
}
ONNX_CASES = [(name, "single") for name in BACKBONES] + [
    (name, fefa) for name in ("thin_resnet34_tap", "vggm_tap") for fefa in ("none", "multi")
] + [("thin_seresnet34_tap", "multi")]
TORCHSCRIPT_CASES = [("thin_resnet34_tap", "single"), ("vggm_tap", "multi"), ("ecapa", "single")]
CASES = [(*case, "onnx") for case in ONNX_CASES] + [(*case, "torchscript") for case in TORCHSCRIPT_CASES]


def random_model(name, fefa):
    torch.manual_seed(0)
    model = BACKBONES[name](fefa).eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ in ("FEFA", "FEFA2d"):
                for parameter in module.parameters():
                    parameter.copy_(torch.randn_like(parameter))
    return model


def new_inputs():
    """Shapes the export never saw: batch 3 at 1.7 s padded, batch 1 at 0.35 s (35 frames)."""
    feats, lengths = example_features(batch=3, seconds=1.7, seed=5)
    short, _ = example_features(batch=1, seconds=0.35, seed=6)
    return [(feats, torch.tensor([1.0, 0.55, 0.8])), (short, torch.ones(1))]


@pytest.mark.parametrize("name, fefa, fmt", CASES)
def test_graph_matches_pytorch(name, fefa, fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    model = random_model(name, fefa)
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    metadata = export_graph(model, str(path), fmt)
    assert metadata["front_end"].startswith("outside")
    graph = GraphModel(path)
    assert graph.is_onnx == (fmt == "onnx")
    assert graph.min_frames == getattr(model, "min_frames", 1)
    for feats, lengths in new_inputs():
        with torch.no_grad():
            expected = model(feats, lengths)
        actual = graph(feats, lengths)
        assert actual.shape == expected.shape
        difference = (actual - expected).abs().max().item()
        scale = expected.abs().max().item()
        assert difference < MAX_REL_DIFF * scale, f"{name} {fefa} {fmt}: max abs diff {difference:.2e}"
    if name == "ecapa":
        return  # SpeechBrain's ECAPA-TDNN convolutions see the padding, also in PyTorch
    # the padded row of the first batch embeds as when alone (lengths are a real input)
    feats, lengths = new_inputs()[0]
    frames = int(round(0.55 * feats.shape[1]))
    alone = graph(feats[1:2, :frames], torch.ones(1))
    padded = graph(feats, lengths)[1]
    assert (alone[0] - padded).abs().max().item() < MAX_REL_DIFF * padded.abs().max().item()


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export_graph(random_model("vggm_tap", "none"), str(tmp_path / "m"), "tflite")
