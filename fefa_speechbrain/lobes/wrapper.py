"""Puts FEFA in front of any SpeechBrain embedding model that takes [batch, time, freq]."""

import torch

from fefa_speechbrain.lobes.fefa import FEFA, check_placement
from fefa_speechbrain.lobes.lengths import valid_frames


class FEFAWrapper(torch.nn.Module):
    """Single-placement FEFA in front of an existing embedding model.

    ``forward(x, lengths)`` returns ``model(FEFA(x, lengths), lengths)``. Works with any
    model whose forward is ``forward(x, lengths=None)`` on [batch, time, freq] features:
    SpeechBrain's ECAPA-TDNN, ResNet and Xvector, on fbanks or on spectrograms. At
    initialisation FEFA is the identity, so a wrapped pretrained model gives exactly its
    own embeddings until FEFA is trained.

    Arguments
    ---------
    model : torch.nn.Module
        The embedding model.
    n_bins : int
        Feature dimension of the model's input (80 for fbanks, 257 for spectrograms).
    fefa : str
        "single" (default) or "none" (the bare model, for the baseline row). "multi" is
        refused: a wrapped model's hidden maps are not time-frequency maps FEFA can see.
    **fefa_kwargs
        Passed to :class:`fefa_speechbrain.lobes.fefa.FEFA` (kernel, apply, rescale).

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> ecapa = ECAPA_TDNN(80, channels=[32, 32, 32, 32, 96], attention_channels=16, lin_neurons=24)
    >>> model = FEFAWrapper(ecapa, n_bins=80).eval()
    >>> feats = torch.randn(2, 150, 80)
    >>> model(feats, torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 1, 24])
    >>> torch.allclose(model(feats), ecapa(feats), atol=1e-6)
    True
    >>> padded = model(feats, torch.tensor([1.0, 0.6]))[1]
    >>> torch.allclose(padded, model(feats[1:, :90])[0], atol=1e-5)
    True
    """

    def __init__(self, model, n_bins, fefa="single", **fefa_kwargs):
        super().__init__()
        if check_placement(fefa) == "multi":
            raise ValueError(
                "fefa='multi' needs a backbone with hidden time-frequency maps (VGG-M, "
                "thin-ResNet34, thin-SEResNet34); FEFAWrapper supports 'none' and 'single'"
            )
        self.input_fefa = FEFA(n_bins, **fefa_kwargs) if fefa == "single" else None
        self.model = model

    def fefa_modules(self):
        """The FEFA modules of this model (the input FEFA, or none)."""
        return [] if self.input_fefa is None else [self.input_fefa]

    def forward(self, x, lengths=None):
        """x: [batch, time, n_bins] -> the wrapped model's embeddings.

        In eval mode, rows of different lengths run in groups of one length without their
        padding, so an utterance's embedding does not depend on its batch (SpeechBrain's
        ECAPA-TDNN convolves over the padding, which changed embeddings by up to 1e-2).
        """
        if lengths is not None and not self.training and not torch.jit.is_tracing():
            frames = valid_frames(lengths, x.shape[1])
            if bool((frames != frames[0]).any()):
                out = None
                for length in torch.unique(frames).tolist():
                    rows = torch.nonzero(frames == length).flatten().to(x.device)
                    emb = self._forward(x[rows, :length], None)
                    if out is None:
                        out = emb.new_empty((x.shape[0],) + emb.shape[1:])
                    out[rows] = emb
                return out
        return self._forward(x, lengths)

    def _forward(self, x, lengths):
        if self.input_fefa is not None:
            x = self.input_fefa(x, lengths)
        return self.model(x, lengths)
