"""The base class of the paper's backbones: where FEFA sits and what the input must be.

:class:`FEFABackbone` holds what VGG-M and thin-ResNet34 share about FEFA: the input FEFA
(placements "single" and "multi"), the hidden FEFA2d modules of placement "multi" kept
in a ``ModuleDict`` apart from the trunk (so a backbone's state dict without FEFA loads
into one with FEFA, key for key), and the input checks.
"""

import torch

from fefa_speechbrain.lobes.fefa import FEFA, FEFA2d, check_placement
from fefa_speechbrain.lobes.layers import TIME_DIM
from fefa_speechbrain.lobes.lengths import absolute_lengths


class FEFABackbone(torch.nn.Module):
    """Base class of the backbones: FEFA placement, input checks and short-input padding.

    The backbones take every argument but ``min_frames`` as keyword arguments
    (``**options``) and pass them here. A subclass builds its trunk, registers one hidden FEFA2d per insertion point with
    :meth:`add_hidden_fefa` (a no-op unless ``fefa="multi"``) and calls
    :meth:`prepare_input` and :meth:`attend` in its forward.

    Arguments
    ---------
    min_frames : int
        Shortest input the trunk accepts; shorter inputs are zero-padded in time up to
        it (their valid length stays the true one, so the result does not depend on it).
    n_bins : int
        Frequency bins of the input spectrogram [batch, time, n_bins].
    fefa : str
        "none", "single" (one FEFA on the input) or "multi" (the input FEFA plus a
        FEFA2d at every insertion point of the subclass).
    fefa_kernel, fefa_apply, fefa_rescale
        ``kernel``, ``apply`` and ``rescale`` of every FEFA / FEFA2d.
    fefa_per_channel : bool
        ``per_channel`` of the hidden FEFA2d modules.
    """

    def __init__(
        self,
        min_frames,
        n_bins=257,
        fefa="single",
        fefa_kernel="local",
        fefa_apply="scale",
        fefa_rescale=True,
        fefa_per_channel=False,
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
