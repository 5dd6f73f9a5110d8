"""Speaker classifier heads and their losses: plain softmax (the paper) and AAM.

The paper trains with the softmax loss: a linear layer with bias, then cross-entropy.
Additive angular margin (ArcFace-style) needs cosine logits: L2-normalized embeddings
and class weights, no bias; the margin and scale live in the loss (SpeechBrain's
``AdditiveAngularMargin``). One head class serves both, selected by ``head``.
"""

import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from fefa_speechbrain.checks import check_choice

HEADS = ("softmax", "aam")


class SpeakerClassifier(torch.nn.Module):
    """Maps embeddings [batch, 1, dim] to speaker logits [batch, 1, n_speakers].

    Arguments
    ---------
    input_size : int
        Embedding dimension.
    n_speakers : int
        Number of training speakers.
    head : str
        "softmax": linear logits with bias; "aam": cosine similarities to class centres.

    Example
    -------
    >>> clf = SpeakerClassifier(16, 5, head="aam")
    >>> out = clf(torch.randn(3, 1, 16))
    >>> out.shape, bool(out.abs().max() <= 1.0 + 1e-6)
    (torch.Size([3, 1, 5]), True)
    """

    def __init__(self, input_size, n_speakers, head="softmax"):
        super().__init__()
        check_choice("head", head, HEADS)
        self.head = head
        self.weight = torch.nn.Parameter(torch.empty(n_speakers, input_size))
        torch.nn.init.xavier_uniform_(self.weight)
        if head == "softmax":
            self.bias = torch.nn.Parameter(torch.zeros(n_speakers))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        """x: [batch, 1, dim] (or [batch, dim]) -> logits [batch, 1, n_speakers]."""
        x = x.reshape(x.shape[0], -1)
        if self.head == "aam":
            logits = F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
        else:
            logits = F.linear(x, self.weight, self.bias)
        return logits.unsqueeze(1)


def speaker_loss(head="softmax", margin=0.2, scale=30.0):
    """The loss that matches a :class:`SpeakerClassifier` head.

    Called as ``loss(logits [B, 1, n], targets [B, 1], lengths)``, like SpeechBrain's
    ``LogSoftmaxWrapper``; returns the mean loss per utterance.

    Example
    -------
    >>> loss = speaker_loss("softmax")
    >>> logits = torch.tensor([[[10.0, 0.0]], [[0.0, 10.0]]])
    >>> float(loss(logits, torch.tensor([[0], [1]]))) < 1e-3
    True
    """
    check_choice("head", head, HEADS)
    if head == "aam":
        return LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=scale))
    return LogSoftmaxWrapper(torch.nn.Identity())
