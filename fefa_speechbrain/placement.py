"""Shared building blocks of the backbones: length-carrying layers and FEFA placement.

Every backbone works on maps laid out [batch, channels, time, freq] (time is dim 2) and
carries *absolute* frame counts ([batch], long) next to the activations. A layer that
mixes neighbouring frames (time kernel > 1) first zeros every frame beyond the valid
length (:func:`~fefa_speechbrain.lengths.mask_time`), then updates the counts with its
own kernel, stride and padding (:func:`~fefa_speechbrain.lengths.conv_output_lengths`).
A valid output frame therefore only ever sees valid input frames or zeros, exactly the
zeros PyTorch pads with when the utterance runs alone: in eval mode a zero-padded batch
gives the same outputs as each utterance alone. Layers with a one-frame time kernel never
mix frames and skip the masking.

Max-pooling pads with -inf, not zeros; the zeros of the mask are equivalent only when the
input is non-negative, which holds in every backbone here (pools follow a ReLU, possibly
followed by a FEFA2d, whose weights are positive).

:class:`FEFABackbone` holds what the three backbones share about FEFA: the input FEFA
(placements "single" and "multi"), the hidden FEFA2d modules of placement "multi" kept
in a ``ModuleDict`` apart from the trunk (so a backbone's state dict without FEFA loads
into one with FEFA, key for key), and the input checks.
"""

import torch

from fefa_speechbrain.fefa import FEFA, FEFA2d, check_placement
from fefa_speechbrain.lengths import absolute_lengths, conv_output_lengths, mask_time

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


class FEFABackbone(torch.nn.Module):
    """Base class of the backbones: FEFA placement, input checks and short-input padding.

    A subclass builds its trunk, registers one hidden FEFA2d per insertion point with
    :meth:`add_hidden_fefa` (a no-op unless ``fefa="multi"``) and calls
    :meth:`prepare_input` and :meth:`attend` in its forward.

    Arguments
    ---------
    n_bins : int
        Frequency bins of the input spectrogram [batch, time, n_bins].
    fefa : str
        "none", "single" (one FEFA on the input) or "multi" (the input FEFA plus a
        FEFA2d at every insertion point of the subclass).
    fefa_kernel, fefa_apply, fefa_rescale
        ``kernel``, ``apply`` and ``rescale`` of every FEFA / FEFA2d.
    fefa_per_channel : bool
        ``per_channel`` of the hidden FEFA2d modules.
    min_frames : int
        Shortest input the trunk accepts; shorter inputs are zero-padded in time up to
        it (their valid length stays the true one, so the result does not depend on it).
    """

    def __init__(
        self,
        n_bins,
        fefa,
        fefa_kernel,
        fefa_apply,
        fefa_rescale,
        fefa_per_channel,
        min_frames,
    ):
        super().__init__()
        self.n_bins = n_bins
        self.placement = check_placement(fefa)
        self.min_frames = min_frames
        self._fefa_options = dict(kernel=fefa_kernel, apply=fefa_apply, rescale=fefa_rescale)
        self._per_channel = fefa_per_channel
        self.input_fefa = None if fefa == "none" else FEFA(n_bins, **self._fefa_options)
        self.hidden_fefa = torch.nn.ModuleDict()

    def add_hidden_fefa(self, name, channels, n_bins):
        """Registers the FEFA2d of insertion point ``name`` (only with fefa="multi")."""
        if self.placement == "multi":
            self.hidden_fefa[name] = FEFA2d(
                n_bins, channels, per_channel=self._per_channel, **self._fefa_options
            )

    def fefa_modules(self):
        """All FEFA / FEFA2d modules, input first, then in network order."""
        head = [] if self.input_fefa is None else [self.input_fefa]
        return head + list(self.hidden_fefa.values())

    def attend(self, name, x, lengths):
        """Applies the hidden FEFA2d of point ``name`` (if any) to x [B, C, T, F].

        Pooling runs in float32 (safe under autocast); lengths are absolute.
        """
        if name not in self.hidden_fefa:
            return x
        relative = lengths.float() / x.shape[TIME_DIM]
        return self.hidden_fefa[name](x.float(), relative).to(x.dtype)

    def prepare_input(self, x, lengths):
        """Checks x [B, T, n_bins], applies the input FEFA, pads short inputs.

        Returns the map [B, 1, T', n_bins] and the absolute frame counts [B].
        """
        if x.dim() != 3 or x.shape[-1] != self.n_bins:
            raise ValueError(
                f"{type(self).__name__} expects input [batch, time, {self.n_bins}], "
                f"got {tuple(x.shape)}"
            )
        abs_lengths = absolute_lengths(lengths, x.shape[1], x.shape[0], x.device)
        if self.input_fefa is not None:
            x = self.input_fefa(x, lengths)
        missing = self.min_frames - x.shape[1]
        if missing > 0:
            x = torch.nn.functional.pad(x, (0, 0, 0, missing))
        return x.unsqueeze(1), abs_lengths
