"""Length-aware aggregations of frame features into one vector per utterance.

Every aggregation takes frame features [batch, channels, time] and *absolute* frame
counts (a long tensor [batch], the counts the backbones carry; ``None`` = all frames
valid) and returns [batch, out_channels]. Padded frames never contribute, so a padded
batch gives the same vectors as each utterance alone. Reductions run in float32, so the
modules are safe under ``torch.autocast`` (float16 or bfloat16).

- ``"tap"``: :class:`TemporalAveragePooling`, the mean over valid frames.
- ``"gvlad"``: :class:`GhostVLAD` (Zhong, Arandjelovic and Zisserman, ACCV 2018), as in
  Xie et al.'s thin-ResNet34 (K=8 clusters, G=2 ghost clusters).
- ``"asp"``: :class:`AttentiveStatisticsPooling` (Okabe et al., 2018): attention-weighted
  mean and standard deviation.
"""

import torch

from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.lobes.lengths import masked_mean, time_mask

AGGREGATIONS = ("tap", "gvlad", "asp")


def _valid_mask(x, lengths):
    """[batch, time] boolean mask of valid frames of x [batch, channels, time]."""
    if lengths is None:
        return torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
    return time_mask(lengths.to(x.device), x.shape[2])


class TemporalAveragePooling(torch.nn.Module):
    """Mean over the valid frames.

    Example
    -------
    >>> pool = TemporalAveragePooling(2)
    >>> x = torch.tensor([[[1.0, 3.0, 50.0], [2.0, 2.0, 50.0]]])
    >>> pool(x, torch.tensor([2]))
    tensor([[2., 2.]])
    """

    def __init__(self, in_channels):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x, lengths=None):
        """x: [B, C, T], lengths: absolute [B] or None -> [B, C] (float32)."""
        mask = _valid_mask(x, lengths)
        return masked_mean(x.float(), mask.sum(dim=1), time_dim=2)


class GhostVLAD(torch.nn.Module):
    """GhostVLAD: soft-assigned residuals to K learned centres, G ghost clusters dropped.

    For every valid frame, a 1-frame conv (with bias) of ``assign_from`` gives K + G
    logits; a softmax over the clusters gives the soft assignment. The residuals of the
    frame features to the K real centres, weighted by the assignment, are summed over
    the valid frames; the G ghost clusters only absorb assignment weight (frames that
    should not count) and have no centres. Each cluster's sum is L2-normalized
    (intra-normalization), the K blocks are flattened and the whole vector is
    L2-normalized, so every block has norm 1/sqrt(K).

    Arguments
    ---------
    in_channels : int
        Feature channels D of the frames; the output has K * D values.
    num_clusters : int
        K, the clusters kept.
    ghost_clusters : int
        G, the clusters dropped.
    assign_channels : int
        Channels of the input the assignments are computed from (``assign_from`` in
        forward); defaults to ``in_channels`` (assignments from the features).

    Example
    -------
    >>> vlad = GhostVLAD(16, num_clusters=4, ghost_clusters=2)
    >>> out = vlad(torch.rand(3, 16, 20), torch.tensor([20, 9, 1]))
    >>> out.shape, torch.allclose(torch.linalg.vector_norm(out, dim=1), torch.ones(3))
    (torch.Size([3, 64]), True)
    """

    def __init__(self, in_channels, num_clusters=8, ghost_clusters=2, assign_channels=None):
        super().__init__()
        if num_clusters < 1 or ghost_clusters < 0:
            raise ValueError(
                f"GhostVLAD needs num_clusters >= 1 and ghost_clusters >= 0, got "
                f"{num_clusters} and {ghost_clusters}"
            )
        self.num_clusters = num_clusters
        self.ghost_clusters = ghost_clusters
        self.out_channels = num_clusters * in_channels
        self.assignment = torch.nn.Conv1d(
            assign_channels or in_channels, num_clusters + ghost_clusters, kernel_size=1
        )
        self.centres = torch.nn.Parameter(torch.empty(num_clusters, in_channels))
        torch.nn.init.orthogonal_(self.centres)

    def forward(self, x, lengths=None, assign_from=None):
        """x: [B, D, T]; lengths: absolute [B] or None; assign_from: [B, C', T] or None.

        Returns [B, K * D] (float32), unit L2 norm.
        """
        logits = self.assignment(x if assign_from is None else assign_from)
        weights = torch.softmax(logits.float(), dim=1)[:, : self.num_clusters]
        weights = weights * _valid_mask(x, lengths).unsqueeze(1)  # [B, K, T]
        # sum_t w[k, t] * (x_t - c_k) = sum_t w[k, t] x_t - (sum_t w[k, t]) c_k
        with torch.autocast(device_type=x.device.type, enabled=False):
            residuals = torch.bmm(weights, x.float().transpose(1, 2))
        residuals = residuals - weights.sum(dim=2, keepdim=True) * self.centres.float()
        residuals = torch.nn.functional.normalize(residuals, dim=2)
        return torch.nn.functional.normalize(residuals.flatten(1), dim=1)


class AttentiveStatisticsPooling(torch.nn.Module):
    """Attentive statistics pooling: attention-weighted mean and std over valid frames.

    One attention score per frame (Okabe et al., 2018): a 1-frame conv to
    ``attention_channels``, tanh, a 1-frame conv to one score; a softmax over the valid
    frames gives the weights.

    Arguments
    ---------
    in_channels : int
        Channels C; the output has 2 C values (mean, then std).
    attention_channels : int
        Hidden size of the attention.

    Example
    -------
    >>> pool = AttentiveStatisticsPooling(8, attention_channels=4)
    >>> x = torch.rand(2, 8, 30)
    >>> out = pool(x, torch.tensor([30, 12]))
    >>> out.shape
    torch.Size([2, 16])
    >>> torch.allclose(out[1], pool(x[1:, :, :12])[0], atol=1e-6)
    True
    """

    def __init__(self, in_channels, attention_channels=128, eps=1e-6):
        super().__init__()
        self.out_channels = 2 * in_channels
        self.eps = eps
        self.attention = torch.nn.Sequential(
            torch.nn.Conv1d(in_channels, attention_channels, kernel_size=1),
            torch.nn.Tanh(),
            torch.nn.Conv1d(attention_channels, 1, kernel_size=1),
        )

    def forward(self, x, lengths=None):
        """x: [B, C, T], lengths: absolute [B] or None -> [B, 2C] (float32)."""
        valid = _valid_mask(x, lengths).unsqueeze(1)  # [B, 1, T]
        scores = self.attention(x).float().masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=2)
        features = x.float().masked_fill(~valid, 0.0)
        mean = (weights * features).sum(dim=2)
        variance = (weights * (features - mean.unsqueeze(2)).pow(2)).sum(dim=2)
        return torch.cat([mean, variance.clamp(min=self.eps).sqrt()], dim=1)


def build_aggregation(
    name,
    in_channels,
    num_clusters=8,
    ghost_clusters=2,
    assign_channels=None,
    attention_channels=128,
):
    """Builds the aggregation ``name`` ("tap", "gvlad" or "asp") for ``in_channels``.

    The other arguments go to the aggregation that uses them (GhostVLAD: num_clusters,
    ghost_clusters, assign_channels; ASP: attention_channels). The module's
    ``out_channels`` is the size of its output.

    Example
    -------
    >>> build_aggregation("gvlad", 512).out_channels
    4096
    >>> build_aggregation("asp", 512).out_channels
    1024
    >>> build_aggregation("max", 512)
    Traceback (most recent call last):
    ...
    ValueError: aggregation='max' is not valid; choose one of ['tap', 'gvlad', 'asp']
    """
    if name == "tap":
        return TemporalAveragePooling(in_channels)
    if name == "gvlad":
        return GhostVLAD(in_channels, num_clusters, ghost_clusters, assign_channels)
    check_choice("aggregation", name, AGGREGATIONS)
    return AttentiveStatisticsPooling(in_channels, attention_channels)
