"""Length bookkeeping shared by every module of the package.

SpeechBrain passes *relative* lengths (a float in (0, 1] per utterance). Inside a
network we convert them once to *absolute* frame counts and carry those through every
layer that changes the time resolution, with the exact output-length formula of that
layer. Every layer input is masked to zero beyond its valid frames, so a padded batch
gives the same result as each utterance alone (in eval mode): that is what makes the
embeddings independent of batch padding.

Convention for the conversion: ``round(relative * max_len)``, as SpeechBrain's own
pooling layers do, clamped to ``[1, max_len]``.
"""

import torch


def absolute_lengths(lengths, max_len, batch_size=None, device=None):
    """Converts relative lengths to integer frame counts.

    Arguments
    ---------
    lengths : torch.Tensor or None
        Relative lengths in (0, 1], shape [batch]. ``None`` means every item is full.
    max_len : int
        The padded number of frames.
    batch_size : int
        Needed when ``lengths`` is None.
    device : torch.device
        Device of the result when ``lengths`` is None.

    Returns
    -------
    torch.Tensor
        Long tensor [batch] with values in [1, max_len].

    Example
    -------
    >>> absolute_lengths(torch.tensor([1.0, 0.5, 0.0]), 10)
    tensor([10,  5,  1])
    >>> absolute_lengths(None, 7, batch_size=2)
    tensor([7, 7])
    """
    if lengths is None:
        return torch.full((batch_size,), max_len, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths)
    return torch.round(lengths.float() * max_len).long().clamp(1, max_len)


def time_mask(abs_lengths, max_len):
    """Boolean mask [batch, max_len]: True on valid frames.

    Example
    -------
    >>> time_mask(torch.tensor([2, 3]), 3)
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    steps = torch.arange(max_len, device=abs_lengths.device)
    return steps.unsqueeze(0) < abs_lengths.unsqueeze(1)


def _broadcast_mask(mask, x, time_dim):
    """Reshapes a [batch, time] mask so that it broadcasts against ``x``."""
    shape = [1] * x.dim()
    shape[0] = x.shape[0]
    shape[time_dim] = x.shape[time_dim]
    return mask.view(shape)


def mask_time(x, abs_lengths, time_dim=1):
    """Zeros every frame of ``x`` beyond its utterance's length.

    Example
    -------
    >>> x = torch.ones(2, 3, 1)
    >>> mask_time(x, torch.tensor([3, 1]))[:, :, 0]
    tensor([[1., 1., 1.],
            [1., 0., 0.]])
    """
    mask = _broadcast_mask(time_mask(abs_lengths, x.shape[time_dim]), x, time_dim)
    return x * mask.to(x.dtype)


def masked_mean(x, abs_lengths, time_dim=1, extra_dims=()):
    """Mean over the valid frames of ``time_dim`` (and over ``extra_dims`` entirely).

    Accumulates in float32 whatever the input precision (a float16 sum overflows), and
    returns float32.

    Arguments
    ---------
    x : torch.Tensor
        Any tensor whose dim 0 is the batch.
    abs_lengths : torch.Tensor
        Valid frames per item, [batch].
    time_dim : int
        The time dimension.
    extra_dims : tuple
        Other dimensions to average over (e.g. channels), with no masking.

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(x, torch.tensor([2]))
    tensor([[2.]])
    """
    mask = _broadcast_mask(time_mask(abs_lengths, x.shape[time_dim]), x, time_dim).float()
    dims = (time_dim,) + tuple(extra_dims)
    total = (x.float() * mask).sum(dim=dims)
    count = mask.expand_as(x).sum(dim=dims)
    return total / count


def conv_output_lengths(abs_lengths, kernel_size, stride=1, padding=0, dilation=1):
    """Frame counts after a convolution or pooling layer along time.

    Uses PyTorch's output-size formula, clamped to at least one frame.

    Example
    -------
    >>> conv_output_lengths(torch.tensor([101, 50]), kernel_size=3, stride=2, padding=1)
    tensor([51, 25])
    """
    span = dilation * (kernel_size - 1) + 1
    out = torch.div(abs_lengths + 2 * padding - span, stride, rounding_mode="floor") + 1
    return out.clamp(min=1)


def valid_frames(lengths, frames):
    """Frame counts of centred frames from relative lengths, ``floor(rel * (frames - 1)) + 1``.

    Exact for the frame-exact lengths of ``Spectrogram.frame_lengths`` (``f / frames``), and
    for waveform-relative lengths (SpeechBrain's ``encode_batch`` passes those) whenever
    the padded length is a whole number of hops; otherwise at most one frame short.

    Example
    -------
    >>> valid_frames(torch.tensor([71 / 231, 1.0]), 231).tolist()
    [71, 231]
    >>> valid_frames(torch.tensor([11200 / 36800]), 231).tolist()  # 1 + 11200 // 160
    [71]
    """
    rel = torch.as_tensor(lengths).double().cpu()
    return (torch.floor(rel * (frames - 1) + 1e-3).long() + 1).clamp(1, frames)  # float32 lengths
