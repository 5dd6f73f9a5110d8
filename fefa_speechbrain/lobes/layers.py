"""Length-carrying layers of the backbones: masked convolution and pooling.

Every backbone works on maps laid out [batch, channels, time, freq] (time is dim 2) and
carries *absolute* frame counts ([batch], long) next to the activations. A layer that
mixes neighbouring frames (time kernel > 1) first zeros every frame beyond the valid
length (:func:`~fefa_speechbrain.lobes.lengths.mask_time`), then updates the counts with its
own kernel, stride and padding (:func:`~fefa_speechbrain.lobes.lengths.conv_output_lengths`).
A valid output frame therefore only ever sees valid input frames or zeros, exactly the
zeros PyTorch pads with when the utterance runs alone: in eval mode a zero-padded batch
gives the same outputs as each utterance alone. Layers with a one-frame time kernel never
mix frames and skip the masking.

Max-pooling pads with -inf, not zeros; the zeros of the mask are equivalent only when the
input is non-negative, which holds in every backbone here (pools follow a ReLU, possibly
followed by a FEFA2d, whose weights are positive).
"""

import torch

from fefa_speechbrain.lobes.lengths import absolute_lengths, conv_output_lengths, mask_time

TIME_DIM = 2


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def scaled_channels(channels, width):
    """Channel count of a layer in a net ``width`` times as wide (rounded, at least 8).

    Example
    -------
    >>> scaled_channels(64, 1.0), scaled_channels(48, 0.25), scaled_channels(16, 0.25)
    (64, 12, 8)
    """
    if width <= 0:
        raise ValueError(f"width={width!r} must be positive")
    return max(8, int(round(channels * width)))


def output_size(size, kernel_size, stride=1, padding=0, name="the axis"):
    """Size of one axis after a conv/pool (PyTorch's formula), as a Python int.

    Raises a ValueError when the axis is too short for the kernel.

    Example
    -------
    >>> output_size(257, kernel_size=7, stride=2, padding=1)
    127
    >>> output_size(3, kernel_size=5, name="the frequency axis at mpool5")
    Traceback (most recent call last):
    ...
    ValueError: the frequency axis at mpool5 has size 3, too short for kernel 5 with padding 0
    """
    if size + 2 * padding < kernel_size:
        raise ValueError(
            f"{name} has size {size}, too short for kernel {kernel_size} "
            f"with padding {padding}"
        )
    out = conv_output_lengths(torch.tensor(size), kernel_size, stride, padding)
    return int(out)


class _LengthCarrying:
    """Mixin for Conv2d / MaxPool2d on [B, C, T, F] that carries frame counts."""

    def output_lengths(self, lengths):
        """Valid frames after this layer, from valid frames before it ([batch])."""
        k, s, p = (_pair(v)[0] for v in (self.kernel_size, self.stride, self.padding))
        return conv_output_lengths(lengths, k, s, p)

    def output_bins(self, n_bins):
        """Frequency extent after this layer (int)."""
        k, s, p = (_pair(v)[1] for v in (self.kernel_size, self.stride, self.padding))
        where = f"the frequency axis at {type(self).__name__} (n_bins too small for the net)"
        return output_size(n_bins, k, s, p, name=where)

    def _masked(self, x, lengths):
        if _pair(self.kernel_size)[0] > 1:
            return mask_time(x, lengths, time_dim=TIME_DIM)
        return x


class MaskedConv2d(_LengthCarrying, torch.nn.Conv2d):
    """Conv2d on [batch, channels, time, freq] that masks padded frames and carries lengths.

    Same arguments as ``torch.nn.Conv2d`` (kernel/stride/padding given as
    (time, freq) or one int); ``bias`` defaults to False.

    Example
    -------
    >>> conv = MaskedConv2d(1, 4, kernel_size=3, stride=2, padding=1)
    >>> y, lengths = conv(torch.rand(2, 1, 11, 9), torch.tensor([11, 6]))
    >>> y.shape, lengths, conv.output_bins(9)
    (torch.Size([2, 4, 6, 5]), tensor([6, 3]), 5)
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias)

    def forward(self, x, lengths):
        """x: [B, C, T, F], lengths: absolute [B] -> (output, output lengths)."""
        return super().forward(self._masked(x, lengths)), self.output_lengths(lengths)


class MaskedMaxPool2d(_LengthCarrying, torch.nn.MaxPool2d):
    """MaxPool2d on [batch, channels, time, freq] (non-negative input) carrying lengths.

    Example
    -------
    >>> pool = MaskedMaxPool2d(kernel_size=(3, 5), stride=(2, 3))
    >>> y, lengths = pool(torch.rand(2, 3, 9, 15), torch.tensor([9, 4]))
    >>> y.shape, lengths, pool.output_bins(15)
    (torch.Size([2, 3, 4, 4]), tensor([4, 1]), 4)
    """

    def forward(self, x, lengths):
        """x: [B, C, T, F] (>= 0), lengths: absolute [B] -> (output, output lengths)."""
        return super().forward(self._masked(x, lengths)), self.output_lengths(lengths)


class ConvBN(torch.nn.Module):
    """MaskedConv2d (no bias) + BatchNorm2d, optionally followed by a ReLU.

    Example
    -------
    >>> layer = ConvBN(2, 8, kernel_size=7, padding=3).eval()
    >>> y, lengths = layer(torch.rand(1, 2, 20, 30), torch.tensor([20]))
    >>> y.shape, bool((y >= 0).all()), layer.output_bins(30)
    (torch.Size([1, 8, 20, 30]), True, 30)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, relu=True):
        super().__init__()
        self.conv = MaskedConv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.norm = torch.nn.BatchNorm2d(out_channels)
        self.relu = relu

    def output_bins(self, n_bins):
        """Frequency extent after this layer (int)."""
        return self.conv.output_bins(n_bins)

    def forward(self, x, lengths):
        """x: [B, C, T, F], lengths: absolute [B] -> (output, output lengths)."""
        x, lengths = self.conv(x, lengths)
        x = self.norm(x)
        return (torch.relu(x) if self.relu else x), lengths
