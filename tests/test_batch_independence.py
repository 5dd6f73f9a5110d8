"""A clip's embedding is the same alone or in any batch, on every backbone and path."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from fefa_speechbrain.inference.embedder import SpeakerEmbedder, pad_signals
from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram, UtteranceNormalization
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
from fefa_speechbrain.lobes.thin_seresnet import ThinSEResNet34
from fefa_speechbrain.lobes.vggm import VGGM
from fefa_speechbrain.lobes.wrapper import FEFAWrapper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "pretrained", "fefa-ecapa128-speechcommands")
LENGTHS = (11200, 16000, 25600, 36800, 16000, 9000)  # 0.56-2.3 s, two of one length
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Mixed-length clips cut and joined from the shipped example audio."""
    folder = tmp_path_factory.mktemp("mixed")
    examples = [sf.read(os.path.join(SHIPPED, "example", name), dtype="float32")[0]
                for name in sorted(os.listdir(os.path.join(SHIPPED, "example")))]
    speech = np.concatenate(examples * 2)
    paths = []
    for row, length in enumerate(LENGTHS):
        path = str(folder / f"clip{row}.wav")
        start = (row * 5000) % (len(speech) - length)
        sf.write(path, speech[start:start + length], 16000, subtype="FLOAT")
        paths.append(path)
    return paths


def _ecapa():
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    return FEFAWrapper(ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8,
                                  lin_neurons=8), 257)


BACKBONES = {
    "ecapa_wrapper": _ecapa,
    "vggm": lambda: VGGM(emb_dim=8, width=0.125),
    "thin_resnet34_tap": lambda: ThinResNet34(aggregation="tap", emb_dim=8, width=0.125),
    "thin_resnet34_gvlad": lambda: ThinResNet34(aggregation="gvlad", emb_dim=8, width=0.125),
    "thin_seresnet34": lambda: ThinSEResNet34(aggregation="tap", emb_dim=8, width=0.125),
}


@pytest.mark.parametrize("norm", [FrameNormalization, UtteranceNormalization])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_padded_batch_equals_each_alone(backbone, norm):
    torch.manual_seed(0)
    modules = {"compute_features": Spectrogram(log=True), "mean_var_norm": norm(),
               "embedding_model": BACKBONES[backbone]().eval()}
    embedder = SpeakerEmbedder(modules)
    generator = torch.Generator().manual_seed(1)
    signals = [0.1 * torch.randn(n, generator=generator) for n in LENGTHS]
    together = embedder.embed(*pad_signals(signals))
    for row, signal in enumerate(signals):
        alone = embedder.embed(signal[None])[0]
        assert (together[row] - alone).abs().max() <= TOLERANCE, (backbone, row)


@pytest.fixture(scope="module")
def shipped():
    from fefa_speechbrain.inference.model_source import load_model

    return load_model(SHIPPED)


def test_shipped_model_files_alone_or_batched(shipped, clips):
    embedder = SpeakerEmbedder(shipped.modules)
    alone = {p: embedder.embed_files([p], 1)[p] for p in clips}
    for batch_size in (2, 16):
        together = embedder.embed_files(clips, batch_size)
        for path in clips:
            assert (together[path] - alone[path]).abs().max() <= TOLERANCE, (batch_size, path)


def test_speechbrain_encode_batch_of_the_shipped_folder(shipped, clips):
    from speechbrain.inference.speaker import SpeakerRecognition

    model = SpeakerRecognition.from_hparams(source=SHIPPED, savedir=None)
    signals = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in clips]
    wavs, lengths = pad_signals(signals)
    batched = model.encode_batch(wavs, lengths).squeeze(1)
    embedder = SpeakerEmbedder(shipped.modules)
    for row, signal in enumerate(signals):
        alone = embedder.embed(signal[None])[0]
        assert (batched[row] - alone).abs().max() <= TOLERANCE, row


def test_cli_embed_alone_or_batched(clips, tmp_path, capsys):
    from fefa_speechbrain.cli import main

    rows = {}
    for batch_size in (1, 16):
        out = tmp_path / f"b{batch_size}.pt"
        assert main(["embed", SHIPPED, *clips, "--output", str(out),
                     "--batch-size", str(batch_size)]) == 0
        rows[batch_size] = torch.load(out, weights_only=True)
    capsys.readouterr()
    for path in rows[1]:
        assert (rows[1][path] - rows[16][path]).abs().max() <= TOLERANCE
