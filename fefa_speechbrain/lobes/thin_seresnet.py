"""Thin-SEResNet34: Xie's thin-ResNet34 trunk with squeeze-excitation in every block.

The paper's own backbone: every bottleneck block of :mod:`fefa_speechbrain.lobes.thin_resnet`
recalibrates its residual branch (after the last BN, before the addition) with a
squeeze-excitation gate (Hu et al., 2018).
"""

import torch

from fefa_speechbrain.lobes.lengths import masked_mean
from fefa_speechbrain.lobes.layers import TIME_DIM
from fefa_speechbrain.lobes.thin_resnet import Bottleneck, ThinResNet34


class SqueezeExcitation(torch.nn.Module):
    """Channel gate from the mean over valid frames and all bins of x [B, C, T, F].

    mean -> linear C -> C // reduction (at least 1) -> ReLU -> linear -> C -> sigmoid
    -> channel scale. Both linear layers have a bias. Padded frames are left out of the
    mean (computed in float32).

    Example
    -------
    >>> se = SqueezeExcitation(32, reduction=16)
    >>> x = torch.rand(2, 32, 10, 5)
    >>> y = se(x, torch.tensor([10, 4]))
    >>> y.shape, sum(p.numel() for p in se.parameters())
    (torch.Size([2, 32, 10, 5]), 162)
    >>> torch.allclose(y[1, :, :4], se(x[1:, :, :4], torch.tensor([4]))[0])
    True
    """

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = torch.nn.Linear(channels, hidden)
        self.excite = torch.nn.Linear(hidden, channels)

    def forward(self, x, lengths):
        """x: [B, C, T, F], lengths: absolute [B] -> x scaled per channel."""
        pooled = masked_mean(x.float(), lengths, time_dim=TIME_DIM, extra_dims=(3,))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))
        return x * gate.to(x.dtype)[:, :, None, None]


class SEBottleneck(Bottleneck):
    """Bottleneck block whose residual branch goes through a SqueezeExcitation.

    Example
    -------
    >>> block = SEBottleneck(16, (8, 8, 32), stride=2, projection=True).eval()
    >>> block(torch.rand(1, 16, 9, 20), torch.tensor([9]))[0].shape
    torch.Size([1, 32, 5, 10])
    """

    def __init__(self, in_channels, channels, stride=1, projection=False, se_reduction=16):
        super().__init__(in_channels, channels, stride, projection)
        self.se = SqueezeExcitation(channels[-1], se_reduction)

    def recalibrate(self, x, lengths):
        """Applies the squeeze-excitation gate to the residual branch."""
        return self.se(x, lengths)


class ThinSEResNet34(ThinResNet34):
    """Thin-SEResNet34 speaker embedding model with FEFA.

    Same trunk, FEFA insertion points, head and arguments as
    :class:`~fefa_speechbrain.lobes.thin_resnet.ThinResNet34` (FEFA2d after the stem
    max-pool, after the first block of stages 3, 4 and 5 and after the frequency
    max-pool for ``fefa="multi"``), with a squeeze-excitation gate of reduction
    ``se_reduction`` in every block and temporal average pooling ("tap") as the
    default aggregation.

    Example
    -------
    >>> model = ThinSEResNet34(fefa="single", emb_dim=32, width=0.125).eval()
    >>> model(torch.rand(3, 101, 257), torch.tensor([1.0, 0.5, 0.8])).shape
    torch.Size([3, 1, 32])
    """

    def __init__(self, aggregation="tap", se_reduction=16, **kwargs):
        if se_reduction < 1:
            raise ValueError(f"se_reduction={se_reduction!r} must be a positive integer")
        self.se_reduction = se_reduction
        super().__init__(aggregation=aggregation, **kwargs)

    def make_block(self, in_channels, channels, stride, projection):
        """Builds one SE bottleneck block."""
        return SEBottleneck(in_channels, channels, stride, projection, self.se_reduction)
