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
            # FEFAWrapper groups mixed lengths in eager eval mode only; the traced graph is
            # its padded forward (SpeakerEmbedder groups rows by length before any graph)
            forward = model._forward if name == "ecapa" else model
            expected = forward(feats, lengths)
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


# ---- the waveform graph: front-end inside -------------------------------------------

WAVEFORM_CASES = [
    ("ecapa", "frame", True, "onnx", False),
    ("thin_resnet34_tap", "utterance", True, "onnx", False),
    ("vggm_tap", "frame", False, "onnx", False),  # magnitude without log; min_frames 65
    ("thin_seresnet34_tap", "utterance", True, "onnx", False),
    ("ecapa", "utterance", True, "torchscript", False),
    ("vggm_tap", "frame", True, "torchscript", False),
    ("ecapa", "frame", True, "onnx", True),  # each frame's mean removed (in the kernel)
    ("vggm_tap", "utterance", True, "torchscript", True),
]


def waveform_modules(name, norm, log, remove_dc=False):
    from fefa_speechbrain.lobes.features import Spectrogram, feature_normalization

    return {"compute_features": Spectrogram(log=log, remove_dc=remove_dc),
            "mean_var_norm": feature_normalization(norm),
            "embedding_model": random_model(name, "single")}


def mixed_waveforms():
    """Lengths the trace never saw, in one padded batch: 2.1 s, 1.3 s, 0.3 s (30 frames)."""
    generator = torch.Generator().manual_seed(7)
    wavs = 0.1 * torch.randn(3, 33600, generator=generator)
    lengths = torch.tensor([1.0, 20800 / 33600, 4800 / 33600])
    keep = torch.arange(wavs.shape[1])[None] < torch.round(lengths * wavs.shape[1])[:, None]
    return wavs * keep, lengths


def relative_difference(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("name, norm, log, fmt, remove_dc", WAVEFORM_CASES)
def test_waveform_graph_matches_pytorch(name, norm, log, fmt, remove_dc, tmp_path):
    from fefa_speechbrain.inference.embedder import SpeakerEmbedder
    from fefa_speechbrain.graph_export import WaveformGraphModel, export_waveform_graph
    from fefa_speechbrain.graph_front_end import describe_preprocessing

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    modules = waveform_modules(name, norm, log, remove_dc)
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    metadata = export_waveform_graph(modules, str(path), fmt)
    graph = WaveformGraphModel(path)
    assert graph.metadata["preprocessing"] == describe_preprocessing(modules)
    assert ("log(x + 1e-06)" in metadata["preprocessing"]) == log
    assert ("each frame's mean removed" in metadata["preprocessing"]) == remove_dc
    assert type(modules["mean_var_norm"]).__name__ in metadata["preprocessing"]
    wavs, lengths = mixed_waveforms()
    expected = SpeakerEmbedder(modules).embed(wavs, lengths)  # each row as when alone
    assert relative_difference(graph(wavs, lengths), expected) < MAX_REL_DIFF
    if name == "ecapa":
        return  # SpeechBrain's ECAPA-TDNN convolutions see the padding: rows of one length
    # the package's backbones: one padded call with relative lengths is exact too
    padded = graph._run(wavs, lengths)
    assert relative_difference(padded, expected) < MAX_REL_DIFF, f"{name}: padded batch"


def test_waveform_graph_of_the_shipped_model_on_speech(tmp_path):
    """Real speech (the card's example clips, cut to mixed lengths): within 1e-5."""
    pytest.importorskip("onnxruntime")
    from fefa_speechbrain.data.audio import load_audio
    from fefa_speechbrain.inference.embedder import SpeakerEmbedder, pad_signals
    from fefa_speechbrain.inference.model_source import load_model
    from fefa_speechbrain.graph_export import WaveformGraphModel, export_waveform_graph

    model = load_model("pretrained/fefa-ecapa128-speechcommands")
    path = str(tmp_path / "model.onnx")
    metadata = export_waveform_graph(model.modules, path, "onnx")
    assert "log(x + 1e-06)" in metadata["preprocessing"]  # the shipped model's Spectrogram(log=True)
    example = "pretrained/fefa-ecapa128-speechcommands/example"
    signals = [load_audio(f"{example}/{name}.flac") for name in ("speaker1_down", "speaker1_go", "speaker2_left")]
    signals += [signals[0][:9000], signals[2][3000:15345]]
    wavs, lengths = pad_signals(signals)
    expected = SpeakerEmbedder(model.modules).embed(wavs, lengths)
    assert relative_difference(WaveformGraphModel(path)(wavs, lengths), expected) < MAX_REL_DIFF


def test_front_end_outside_the_package_is_refused(tmp_path):
    from speechbrain.lobes.features import Fbank

    from fefa_speechbrain.graph_export import export_waveform_graph
    from fefa_speechbrain.graph_front_end import FrontEndError

    modules = {**waveform_modules("ecapa", "frame", True), "compute_features": Fbank()}
    with pytest.raises(FrontEndError, match="only fefa_speechbrain.lobes.features.Spectrogram"):
        export_waveform_graph(modules, str(tmp_path / "m.onnx"), "onnx")
