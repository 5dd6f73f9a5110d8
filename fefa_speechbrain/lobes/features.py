"""The 257-bin spectrogram front-end and the normalization that FEFA needs.

Where normalization sits relative to FEFA
-----------------------------------------
The pipeline is ``Spectrogram -> FrameNormalization -> FEFA -> backbone``, the same
order as SpeechBrain's ``compute_features -> mean_var_norm -> embedding_model``.

Details: ``docs/reference.md`` (fefa_speechbrain.lobes.features).
"""

import math

import torch
from speechbrain.processing.features import STFT, spectral_magnitude

from fefa_speechbrain.lobes.lengths import valid_frames


class Spectrogram(torch.nn.Module):
    """Short-time magnitude spectrogram, [batch, time, 257] for 16 kHz audio.

    Built on SpeechBrain's STFT: 25 ms Hamming window, 10 ms hop, 512-point FFT, centred
    frames with zero padding (so a zero-padded waveform gives, on its first frames, exactly
    the frames of the unpadded one).

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the input waveforms.
    win_length : float
        Window length in milliseconds.
    hop_length : float
        Hop in milliseconds (the paper's "overlap of 10 ms" read as a 10 ms hop).
    n_fft : int
        FFT size; ``n_fft // 2 + 1`` bins.
    power : bool
        If True, the power spectrum ``|X|^2``; else the magnitude ``|X|`` (default, as Xie).
    log : bool
        If True, ``log(spec + eps)``.
    eps : float
        Floor inside the logarithm.
    remove_dc : bool
        If True, each frame's mean is removed before the window (Kaldi's
        ``remove_dc_offset``), so a constant offset of the waveform does not change the
        spectrogram, except in the two frames at each end that overlap the zero padding
        of centred frames; frame by frame, so padding changes nothing either.

    Example
    -------
    >>> spec = Spectrogram()
    >>> spec(torch.randn(2, 16000)).shape
    torch.Size([2, 101, 257])
    >>> dc = Spectrogram(remove_dc=True)
    >>> wav = torch.randn(1, 8000)
    >>> bool((dc(wav + 0.3) - dc(wav))[:, 2:-2].abs().max() < 1e-2)
    True
    """

    def __init__(
        self,
        sample_rate=16000,
        win_length=25,
        hop_length=10,
        n_fft=512,
        power=False,
        log=False,
        eps=1e-6,
        remove_dc=False,
    ):
        super().__init__()
        self.stft = STFT(
            sample_rate=sample_rate,
            win_length=win_length,
            hop_length=hop_length,
            n_fft=n_fft,
            window_fn=torch.hamming_window,
        )
        self.n_bins = n_fft // 2 + 1
        self.hop_samples = int(round(sample_rate * hop_length / 1000.0))
        self.power = power
        self.log = log
        self.eps = eps
        self.remove_dc = remove_dc

    def forward(self, wavs):
        """Returns the spectrogram of ``wavs`` [batch, samples] as [batch, time, bins]."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            stft = self.stft(wavs.float())
            if getattr(self, "remove_dc", False):
                stft = stft - self._frame_means(wavs.float(), stft.shape[1]) * self._window_dft()
            spec = spectral_magnitude(stft, power=1.0 if self.power else 0.5)
            if self.log:
                spec = torch.log(spec + self.eps)
        return spec

    def _frame_means(self, wavs, frames):
        """[batch, frames, 1, 1]: the mean of the samples under each frame's window."""
        stft = self.stft
        n_fft, win, hop = int(stft.n_fft), int(stft.win_length), int(stft.hop_length)
        x = wavs.unsqueeze(1)
        if stft.center:
            x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2), mode=stft.pad_mode)
        x = x[..., (n_fft - win) // 2:]
        means = torch.nn.functional.avg_pool1d(x, win, hop)[:, 0, :frames]
        return means[..., None, None]

    def _window_dft(self):
        """[bins, 2]: the DFT (real, imaginary) of the window, placed as ``torch.stft`` does."""
        stft = self.stft
        n_fft, win = int(stft.n_fft), int(stft.win_length)
        window = torch.zeros(n_fft, device=stft.window.device)
        left = (n_fft - win) // 2
        window[left:left + win] = stft.window.float()
        spectrum = torch.fft.rfft(window)
        if stft.normalized_stft:
            spectrum = spectrum / math.sqrt(n_fft)
        return torch.view_as_real(spectrum)

    def frame_lengths(self, lengths, num_samples):
        """Relative lengths in frames that are exact for this front-end.

        Centred frames number ``1 + n // hop`` for ``n`` samples, which is not
        proportional to ``n``: ``round(relative * frames)`` can be one frame off for a
        zero-padded utterance, and then its embedding differs from the one it gets alone.
        Pass the result of this method to the model instead of the waveform lengths.

        Arguments
        ---------
        lengths : torch.Tensor
            Relative waveform lengths [batch].
        num_samples : int
            Padded number of samples of the batch.

        Example
        -------
        >>> spec = Spectrogram()
        >>> rel = spec.frame_lengths(torch.tensor([1.0, 7200 / 9700]), 9700)
        >>> torch.round(rel * spec(torch.zeros(1, 9700)).shape[1]).tolist()
        [61.0, 46.0]
        """
        samples = torch.round(torch.as_tensor(lengths, dtype=torch.float64) * num_samples)
        frames = 1 + torch.div(samples, self.hop_samples, rounding_mode="floor")
        total = 1 + num_samples // self.hop_samples
        return (frames / total).to(torch.float32)


def feature_lengths(compute_features, lengths, num_samples):
    """Relative feature lengths for a front-end: exact where it knows its framing.

    Example
    -------
    >>> feature_lengths(Spectrogram(), torch.tensor([0.5]), 32000)
    tensor([0.5025])
    >>> feature_lengths(torch.nn.Identity(), torch.tensor([0.5]), 32000)
    tensor([0.5000])
    """
    if hasattr(compute_features, "frame_lengths"):
        return compute_features.frame_lengths(lengths, num_samples).to(lengths.device)
    return lengths


class FrameNormalization(torch.nn.Module):
    """Normalizes every frame across frequency to zero mean and unit variance.

    Padding frames (all zeros) stay zero, and the result of a frame does not depend on
    any other frame, so the module needs no lengths; it accepts them for the
    ``mean_var_norm(feats, lengths)`` call of SpeechBrain's inference classes.

    Arguments
    ---------
    eps : float
        Added to the standard deviation.

    Example
    -------
    >>> norm = FrameNormalization()
    >>> y = norm(torch.rand(2, 5, 257) * 10)
    >>> torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-5)
    True
    """

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x, lengths=None):
        """x: [batch, time, freq] -> same shape."""
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / (std + self.eps)


class UtteranceNormalization(torch.nn.Module):
    """Normalizes each utterance's log-spectrogram by one mean and one deviation, with a floor.

    Every value below the utterance's peak minus ``floor_db`` is raised to that floor
    (digital silence, 8-bit zeros and the deepest spectral valleys then sit at one level
    instead of at ``log(eps)``), then the utterance's mean and standard deviation over its
    valid frames and all bins are removed. Unlike :class:`FrameNormalization`, quiet and
    silent frames stay quiet: their noise floor is not scaled up to the level of speech.
    The spectral shape is kept, so FEFA's query (the time-averaged input) stays
    informative, and a gain change leaves the result unchanged. Padding frames are set to
    zero, and the result of an utterance does not depend on the others in its batch.

    Arguments
    ---------
    floor_db : float
        Dynamic range kept below the utterance's peak, in dB of magnitude (None: no floor).
    eps : float
        Added to the standard deviation.
    log_input : bool
        True: the input is a natural-log magnitude spectrogram (``Spectrogram(log=True)``).

    Example
    -------
    >>> norm = UtteranceNormalization()
    >>> x = torch.log(torch.rand(2, 50, 257) + 1e-6)
    >>> y = norm(x, torch.tensor([1.0, 0.6]))
    >>> bool(y[1, 30:].abs().max() == 0), torch.allclose(norm(x + 3.0), norm(x), atol=1e-5)
    (True, True)
    >>> alone = norm(x[1:, :30])
    >>> torch.allclose(alone, y[1:, :30], atol=1e-5)
    True
    """

    def __init__(self, floor_db=60.0, eps=1e-5, log_input=True):
        super().__init__()
        if not log_input:
            raise ValueError("UtteranceNormalization needs a log spectrogram (log_spectrum: True)")
        self.floor = None if floor_db is None else float(floor_db) / 20.0 * 2.302585092994046
        self.eps = eps

    def forward(self, x, lengths=None):
        """x: [batch, time, freq] log-magnitudes, relative lengths [batch] -> same shape."""
        batch, frames = x.shape[:2]
        if lengths is None:
            lengths = torch.ones(batch, device=x.device)
        valid = valid_frames(lengths, frames).to(x.device)
        mask = (torch.arange(frames, device=x.device)[None, :] < valid[:, None])[..., None]
        if self.floor is not None:
            peak = torch.where(mask, x, torch.full_like(x, -torch.inf)).amax(dim=(1, 2), keepdim=True)
            x = torch.maximum(x, peak - self.floor)
        count = valid.to(x.dtype)[:, None, None] * x.shape[2]
        mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
        var = ((x - mean).pow(2) * mask).sum(dim=(1, 2), keepdim=True) / count
        return torch.where(mask, (x - mean) / (var.sqrt() + self.eps), torch.zeros_like(x))


NORMALIZATIONS = {"frame": FrameNormalization, "utterance": UtteranceNormalization}


def feature_normalization(name):
    """The ``mean_var_norm`` module of a recipe's ``feature_norm`` setting.

    Example
    -------
    >>> type(feature_normalization("utterance")).__name__
    'UtteranceNormalization'
    """
    if name not in NORMALIZATIONS:
        raise ValueError(f"feature_norm: {name!r} is not one of {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]()


def embed_waveforms(modules, wavs, lengths):
    """The recipe's forward pass, waveforms -> embeddings [batch, 1, dim]: ``compute_features``,
    then ``mean_var_norm`` and ``embedding_model`` with frame-exact relative lengths.

    Training (the recipe's ``SpeakerBrain``), :class:`~fefa_speechbrain.inference.embedder.SpeakerEmbedder`
    and the exported models run this same chain.

    Example
    -------
    >>> modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": lambda feats, lengths: feats.mean(1, keepdim=True)}
    >>> embed_waveforms(modules, torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 257])
    """
    feats = modules["compute_features"](wavs)
    feat_lens = feature_lengths(modules["compute_features"], lengths, wavs.shape[1])
    feats = modules["mean_var_norm"](feats, feat_lens)
    return modules["embedding_model"](feats, feat_lens)
