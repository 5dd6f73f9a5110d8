"""Fine-grained Early Frequency Attention (Hajavi & Etemad).

FEFA weighs every frequency bin of a spectrogram before the network sees it:
average-pool the spectrogram over time, pass the pooled vector through a locally
connected kernel (one weight and one bias per bin), take a softmax over the bins and
scale each bin of the input by its probability.

Details: ``docs/reference.md`` (fefa_speechbrain.lobes.fefa).
"""

import torch

from fefa_speechbrain.checks import check_choice
from fefa_speechbrain.lobes.lengths import absolute_lengths, masked_mean

KERNELS = ("local", "literal")
APPLY_MODES = ("scale", "pooled")


class FEFA(torch.nn.Module):
    """FEFA on a spectrogram [batch, time, freq] (the single placement, FEFA(S)).

    Arguments
    ---------
    n_bins : int
        Number of frequency bins (257 for a 512-point FFT).
    kernel : str
        "local" (input-dependent, default) or "literal" (input-independent softmax(W)).
    apply : str
        "scale" (X' = a * X, default) or "pooled" (X' = a * mean_t(X) * X).
    rescale : bool
        Multiply the softmax by ``n_bins`` so that uniform attention is the identity.

    Example
    -------
    >>> fefa = FEFA(257)
    >>> x = torch.rand(2, 120, 257)
    >>> y = fefa(x, torch.tensor([1.0, 0.5]))
    >>> y.shape, sum(p.numel() for p in fefa.parameters())
    (torch.Size([2, 120, 257]), 514)
    >>> torch.allclose(x, y)  # an untrained FEFA is the identity
    True
    >>> fefa.last_attention.shape
    torch.Size([2, 257])
    """

    def __init__(self, n_bins=257, kernel="local", apply="scale", rescale=True):
        super().__init__()
        check_choice("kernel", kernel, KERNELS)
        check_choice("apply", apply, APPLY_MODES)
        self.n_bins = n_bins
        self.kernel = kernel
        self.apply_mode = apply
        self.rescale = rescale
        self.weight = torch.nn.Parameter(torch.zeros(n_bins))
        if kernel == "local":
            self.bias = torch.nn.Parameter(torch.zeros(n_bins))
        else:
            self.register_parameter("bias", None)
        self.last_attention = None

    def extra_repr(self):
        return (
            f"n_bins={self.n_bins}, kernel={self.kernel}, apply={self.apply_mode}, "
            f"rescale={self.rescale}"
        )

    def attention(self, pooled):
        """Attention weights [batch, bins] from the time-pooled input [batch, bins]."""
        if self.kernel == "local":
            scores = pooled * self.weight + self.bias
        else:
            scores = self.weight.expand_as(pooled)
        weights = torch.softmax(scores.float(), dim=-1)
        if self.rescale:
            weights = weights * self.n_bins
        if self.apply_mode == "pooled":
            weights = weights * pooled
        return weights

    def _pool(self, x, lengths):
        abs_len = absolute_lengths(lengths, x.shape[1], x.shape[0], x.device)
        return masked_mean(x, abs_len, time_dim=1)

    def forward(self, x, lengths=None):
        """x: [batch, time, freq]; lengths: relative, [batch] -> [batch, time, freq]."""
        if x.shape[-1] != self.n_bins:
            raise ValueError(
                f"FEFA was built for {self.n_bins} frequency bins but got input of shape "
                f"{tuple(x.shape)} (expected [batch, time, {self.n_bins}])"
            )
        weights = self.attention(self._pool(x, lengths))
        self.last_attention = weights.detach()
        return x * weights.to(x.dtype).unsqueeze(1)


class FEFA2d(FEFA):
    """FEFA on a hidden time-frequency map [batch, channels, time, freq] (placement M).

    Pooling choice: the query averages over time *and channels*, so there is one weight
    and one bias per frequency row of the map (2 F' parameters) and the same weight
    scales that row in every channel: the attention stays "per frequency bin", as in
    the single placement. ``per_channel=True`` keeps the channels apart instead
    (2 C F' parameters, one weight per channel and bin).

    Arguments
    ---------
    n_bins : int
        Frequency extent F' of the hidden map.
    channels : int
        Number of channels C (used only with ``per_channel=True``).
    per_channel : bool
        One attention distribution per channel instead of one shared.
    kernel, apply, rescale
        As in :class:`FEFA`.

    Example
    -------
    >>> fefa = FEFA2d(n_bins=64, channels=16)
    >>> x = torch.rand(3, 16, 50, 64)
    >>> torch.allclose(fefa(x, torch.tensor([1.0, 0.7, 0.2])), x)
    True
    >>> sum(p.numel() for p in fefa.parameters())
    128
    """

    def __init__(
        self,
        n_bins,
        channels=1,
        per_channel=False,
        kernel="local",
        apply="scale",
        rescale=True,
    ):
        super().__init__(n_bins=n_bins, kernel=kernel, apply=apply, rescale=rescale)
        self.per_channel = per_channel
        self.channels = channels
        if per_channel:
            self.weight = torch.nn.Parameter(torch.zeros(channels, n_bins))
            if self.bias is not None:
                self.bias = torch.nn.Parameter(torch.zeros(channels, n_bins))

    def _pool(self, x, lengths):
        abs_len = absolute_lengths(lengths, x.shape[2], x.shape[0], x.device)
        extra = () if self.per_channel else (1,)
        # [B, C, F] per channel, else [B, F]
        return masked_mean(x, abs_len, time_dim=2, extra_dims=extra)

    def forward(self, x, lengths=None):
        """x: [batch, channels, time, freq] -> same shape."""
        if x.dim() != 4 or x.shape[-1] != self.n_bins:
            raise ValueError(
                f"FEFA2d expects [batch, channels, time, {self.n_bins}], got {tuple(x.shape)}"
            )
        weights = self.attention(self._pool(x, lengths))
        self.last_attention = weights.detach()
        weights = weights.to(x.dtype)
        if self.per_channel:
            return x * weights.unsqueeze(2)
        return x * weights.unsqueeze(1).unsqueeze(1)


FEFA_PLACEMENTS = ("none", "single", "multi")


def check_placement(fefa):
    """Validates a ``fefa=`` placement argument.

    Example
    -------
    >>> check_placement("single")
    'single'
    >>> check_placement("sometimes")
    Traceback (most recent call last):
    ...
    ValueError: fefa='sometimes' is not valid; choose one of ['none', 'single', 'multi']
    """
    check_choice("fefa", fefa, FEFA_PLACEMENTS)
    return fefa
