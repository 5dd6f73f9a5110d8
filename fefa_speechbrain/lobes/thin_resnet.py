"""Xie et al.'s thin-ResNet34 ("resnet34s", ICASSP 2019) with FEFA and a choice of heads.

Layer by layer (257 bins x 250 frames in, maps written channels x freq x time):

Details: ``docs/reference.md`` (fefa_speechbrain.lobes.thin_resnet).
"""

import torch

from fefa_speechbrain.lobes.backbone import FEFABackbone
from fefa_speechbrain.lobes.layers import ConvBN, MaskedMaxPool2d, scaled_channels
from fefa_speechbrain.lobes.pooling import GhostVLAD, build_aggregation

STEM_CHANNELS = 64
# (stage name, (reduce, 3x3, expand) channels, blocks, stride of the first block)
STAGES = (
    ("stage2", (48, 48, 96), 2, 1),
    ("stage3", (96, 96, 128), 3, 2),
    ("stage4", (128, 128, 256), 3, 2),
    ("stage5", (256, 256, 512), 3, 2),
)
HEAD_CHANNELS = 512


class Bottleneck(torch.nn.Module):
    """Bottleneck residual block on [batch, channels, time, freq] carrying frame counts.

    Example
    -------
    >>> block = Bottleneck(16, (8, 8, 32), stride=2, projection=True).eval()
    >>> y, lengths = block(torch.rand(2, 16, 9, 20), torch.tensor([9, 4]))
    >>> y.shape, lengths, block.output_bins(20)
    (torch.Size([2, 32, 5, 10]), tensor([5, 2]), 10)
    """

    def __init__(self, in_channels, channels, stride=1, projection=False):
        super().__init__()
        reduce, middle, expand = channels
        self.reduce = ConvBN(in_channels, reduce, 1, stride)
        self.conv = ConvBN(reduce, middle, 3, padding=1)
        self.expand = ConvBN(middle, expand, 1, relu=False)
        self.shortcut = None
        if projection:
            self.shortcut = ConvBN(in_channels, expand, 1, stride, relu=False)

    def output_bins(self, n_bins):
        """Frequency extent after the block (int)."""
        return self.reduce.output_bins(n_bins)

    def recalibrate(self, x, lengths):
        """Hook applied to the residual branch before the addition (identity here)."""
        return x

    def forward(self, x, lengths):
        """x: [B, C, T, F], lengths: absolute [B] -> (output, output lengths)."""
        out, out_lengths = self.reduce(x, lengths)
        out, _ = self.conv(out, out_lengths)
        out, _ = self.expand(out, out_lengths)
        out = self.recalibrate(out, out_lengths)
        shortcut = x if self.shortcut is None else self.shortcut(x, lengths)[0]
        return torch.relu(out + shortcut), out_lengths


class SpeakerHead(torch.nn.Module):
    """Frame conv spanning the remaining frequency extent, aggregation, FC (+ ReLU).

    The trunk output [B, C, T, F'] is read as frames [B, C * F', T]; a 1-frame conv over
    them (= a conv spanning all F' bins and one frame) gives ``features`` values per
    frame (bias, ReLU). The aggregation pools them over the valid frames; GhostVLAD
    computes its cluster assignments from the trunk frames themselves (its own conv
    spanning F', with bias), as in Xie et al. A linear layer (bias) gives the embedding,
    followed by a ReLU when ``emb_relu`` is True (Xie et al.'s design). The same head is
    used for "tap", "gvlad" and "asp".

    ``emb_relu=False`` lets the embedding use its negative half (with the ReLU about
    three quarters of the units are exactly zero in our small runs). It is an option for
    experiments, not a recommendation: on the demo corpus (width 0.25, 600 steps) the
    published ReLU gave 13.5 % EER and the linear embedding 20.0 %.

    Example
    -------
    >>> head = SpeakerHead(16, 7, features=32, aggregation="gvlad", emb_dim=10)
    >>> head(torch.rand(2, 16, 5, 7), torch.tensor([5, 3])).shape
    torch.Size([2, 1, 10])
    >>> linear = SpeakerHead(16, 7, features=32, aggregation="tap", emb_dim=10, emb_relu=False)
    >>> bool((linear(torch.rand(2, 16, 5, 7), torch.tensor([5, 3])) < 0).any())
    True
    """

    def __init__(self, channels, n_bins, features, aggregation, emb_dim, emb_relu=True):
        super().__init__()
        self.emb_relu = emb_relu
        frame_channels = channels * n_bins
        self.frame_conv = torch.nn.Conv1d(frame_channels, features, kernel_size=1)
        self.pool = build_aggregation(aggregation, features, assign_channels=frame_channels)
        self.fc = torch.nn.Linear(self.pool.out_channels, emb_dim)

    def forward(self, x, lengths):
        """x: [B, C, T, F'], lengths: absolute [B] -> embeddings [B, 1, emb_dim]."""
        frames = x.transpose(2, 3).flatten(1, 2)
        features = torch.relu(self.frame_conv(frames))
        if isinstance(self.pool, GhostVLAD):
            pooled = self.pool(features, lengths, assign_from=frames)
        else:
            pooled = self.pool(features, lengths)
        embeddings = self.fc(pooled)
        if self.emb_relu:
            embeddings = torch.relu(embeddings)
        return embeddings.unsqueeze(1)


class ThinResNet34(FEFABackbone):
    """Thin-ResNet34 speaker embedding model with FEFA.

    Input: spectrogram [batch, time, n_bins] with relative lengths; output: embeddings
    [batch, 1, emb_dim]. Padded frames are masked at every layer, so in eval mode the
    embeddings do not depend on batch padding. Inputs shorter than 2 frames (the stem
    max-pool's window) are zero-padded internally.

    FEFA insertion points
    ---------------------
    - ``fefa="single"``: one FEFA(n_bins) on the input spectrogram.
    - ``fefa="multi"``: the input FEFA, plus a FEFA2d wherever the map changes size:
      after the stem max-pool ("stem_pool", 128 bins for 257), after the first block of
      stages 3, 4 and 5 ("stage3", "stage4", "stage5": 64, 32 and 16 bins) and after
      the final frequency max-pool ("freq_pool", 7 bins). All act on post-ReLU maps.

    Arguments
    ---------
    aggregation : str
        "gvlad" (GhostVLAD, K=8, G=2; default), "tap" or "asp", see :class:`SpeakerHead`.
    emb_dim : int
        Embedding size.
    width : float
        Multiplies every conv channel count (rounded, at least 8), the head's 512 frame
        features included; 1.0 is the published network.
    emb_relu : bool
        ReLU on the embedding layer (True, as published; see :class:`SpeakerHead`).
    **options
        ``n_bins`` (257), ``fefa`` ("none", "single" or "multi"; default "single"),
        ``fefa_kernel``, ``fefa_apply``, ``fefa_rescale``, ``fefa_per_channel``: see
        :class:`~fefa_speechbrain.lobes.backbone.FEFABackbone`.

    Example
    -------
    >>> model = ThinResNet34(fefa="multi", aggregation="tap", emb_dim=64, width=0.125).eval()
    >>> model(torch.rand(2, 101, 257), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 1, 64])
    >>> [m.n_bins for m in model.fefa_modules()]
    [257, 128, 64, 32, 16, 7]
    """

    def __init__(self, aggregation="gvlad", emb_dim=512, width=1.0, emb_relu=True, **options):
        super().__init__(2, **options)
        n_bins = self.n_bins
        channels = scaled_channels(STEM_CHANNELS, width)
        self.stem = ConvBN(1, channels, 7, padding=3)
        self.stem_pool = MaskedMaxPool2d(2, 2)
        bins = self.stem_pool.output_bins(self.stem.output_bins(n_bins))
        self.add_hidden_fefa("stem_pool", channels, bins)

        self.stages = torch.nn.ModuleDict()
        for name, widths, blocks, stride in STAGES:
            widths = tuple(scaled_channels(c, width) for c in widths)
            stage = torch.nn.ModuleList()
            for index in range(blocks):
                first = index == 0
                stage.append(self.make_block(channels, widths, stride if first else 1, first))
                channels = widths[-1]
            self.stages[name] = stage
            bins = stage[0].output_bins(bins)
            if stride != 1:
                self.add_hidden_fefa(name, channels, bins)

        self.freq_pool = MaskedMaxPool2d((1, 3), (1, 2))
        bins = self.freq_pool.output_bins(bins)
        self.add_hidden_fefa("freq_pool", channels, bins)
        self.head = SpeakerHead(
            channels, bins, scaled_channels(HEAD_CHANNELS, width), aggregation, emb_dim, emb_relu
        )

    def make_block(self, in_channels, channels, stride, projection):
        """Builds one residual block (overridden by the SE variant)."""
        return Bottleneck(in_channels, channels, stride, projection)

    def forward(self, x, lengths=None):
        """x: [batch, time, n_bins]; lengths: relative [batch] -> [batch, 1, emb_dim]."""
        x, lengths = self.prepare_input(x, lengths)
        x, lengths = self.stem(x, lengths)
        x, lengths = self.stem_pool(x, lengths)
        x = self.attend("stem_pool", x, lengths)
        for name, stage in self.stages.items():
            for index, block in enumerate(stage):
                x, lengths = block(x, lengths)
                if index == 0:
                    x = self.attend(name, x, lengths)
        x, lengths = self.freq_pool(x, lengths)
        x = self.attend("freq_pool", x, lengths)
        return self.head(x, lengths)
