"""VGG-M (Nagrani, Chung and Zisserman, VoxCeleb 2017) with FEFA, on 257 one-sided bins.

Layer by layer (257 bins x 300 frames in, maps written channels x freq x time; kernels
and strides are the same along both axes unless noted):

Details: ``docs/reference.md`` (fefa_speechbrain.lobes.vggm).
"""

import torch

from fefa_speechbrain.lobes.backbone import FEFABackbone
from fefa_speechbrain.lobes.layers import ConvBN, MaskedMaxPool2d, scaled_channels
from fefa_speechbrain.lobes.pooling import TemporalAveragePooling

FC6_CHANNELS = 4096
# Shortest input (frames) for which every layer keeps at least one frame, going back
# from mpool5: it needs 3 frames out of mpool2, which needs 7 out of conv2, which needs
# 15 out of mpool1, which needs 31 out of conv1, which needs 65 input frames.
MIN_FRAMES = 65


class VGGM(FEFABackbone):
    """VGG-M speaker embedding model with FEFA.

    Input: spectrogram [batch, time, n_bins] with relative lengths; output: embeddings
    [batch, 1, emb_dim]. Padded frames are masked at every layer, so in eval mode the
    embeddings do not depend on batch padding. Inputs shorter than 65 frames (0.65 s,
    the shortest the layers accept) are zero-padded internally to 65 frames; only
    their valid frames count in the pooling.

    FEFA insertion points
    ---------------------
    - ``fefa="single"``: one FEFA(n_bins) on the input spectrogram.
    - ``fefa="multi"``: the input FEFA, plus a FEFA2d after every layer that changes the
      map's size: after conv1 (BN, ReLU), mpool1, conv2 (BN, ReLU), mpool2 and mpool5
      (127, 63, 31, 15 and 4 bins for 257). fc6 also changes the size, to a single bin,
      where attention over frequency is meaningless: no FEFA2d there.

    Arguments
    ---------
    aggregation : str
        Only "tap" (apool6, temporal average pooling), as published.
    emb_dim : int
        Embedding size (fc7).
    width : float
        Multiplies every conv channel count, fc6's 4096 included (rounded, at least 8);
        1.0 is the published network.
    emb_relu : bool
        ReLU on fc7, the embedding layer (True, as published).
    **options
        ``n_bins`` (257), ``fefa`` ("none", "single" or "multi"; default "single"),
        ``fefa_kernel``, ``fefa_apply``, ``fefa_rescale``, ``fefa_per_channel``: see
        :class:`~fefa_speechbrain.lobes.backbone.FEFABackbone`.

    Example
    -------
    >>> model = VGGM(fefa="multi", emb_dim=64, width=0.125).eval()
    >>> [m.n_bins for m in model.fefa_modules()]
    [257, 127, 63, 31, 15, 4]
    >>> short = torch.rand(2, 30, 257)  # 30 frames: zero-padded to 65 inside
    >>> model(short, torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 64])
    """

    def __init__(self, aggregation="tap", emb_dim=1024, width=1.0, emb_relu=True, **options):
        if aggregation != "tap":
            raise ValueError(f"VGGM supports only aggregation='tap', got {aggregation!r}")
        super().__init__(MIN_FRAMES, **options)
        n_bins = self.n_bins
        c1, c2, c3, c4, c5 = (scaled_channels(c, width) for c in (96, 256, 384, 256, 256))
        self.layers = torch.nn.ModuleDict(
            {
                "conv1": ConvBN(1, c1, 7, stride=2, padding=1),
                "mpool1": MaskedMaxPool2d(3, 2),
                "conv2": ConvBN(c1, c2, 5, stride=2, padding=1),
                "mpool2": MaskedMaxPool2d(3, 2),
                "conv3": ConvBN(c2, c3, 3, padding=1),
                "conv4": ConvBN(c3, c4, 3, padding=1),
                "conv5": ConvBN(c4, c5, 3, padding=1),
                "mpool5": MaskedMaxPool2d((3, 5), (2, 3)),
            }
        )
        channels = {"conv1": c1, "conv2": c2, "conv3": c3, "conv4": c4, "conv5": c5}
        bins, current = n_bins, 1
        for name, layer in self.layers.items():
            out_bins = layer.output_bins(bins)
            current = channels.get(name, current)
            if out_bins != bins:  # every layer here changes time and freq together
                self.add_hidden_fefa(name, current, out_bins)
            bins = out_bins
        fc6 = scaled_channels(FC6_CHANNELS, width)
        self.fc6 = ConvBN(current, fc6, (1, bins))
        self.pool = TemporalAveragePooling(fc6)
        self.fc7 = torch.nn.Linear(fc6, emb_dim)
        self.emb_relu = emb_relu

    def forward(self, x, lengths=None):
        """x: [batch, time, n_bins]; lengths: relative [batch] -> [batch, 1, emb_dim]."""
        x, lengths = self.prepare_input(x, lengths)
        for name, layer in self.layers.items():
            x, lengths = layer(x, lengths)
            x = self.attend(name, x, lengths)
        x, lengths = self.fc6(x, lengths)
        pooled = self.pool(x.squeeze(3), lengths)
        embeddings = self.fc7(pooled)
        if self.emb_relu:
            embeddings = torch.relu(embeddings)
        return embeddings.unsqueeze(1)
