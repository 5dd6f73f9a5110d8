"""The 257-bin spectrogram front-end and the normalization that FEFA needs.

Where normalization sits relative to FEFA
-----------------------------------------
The pipeline is ``Spectrogram -> FrameNormalization -> FEFA -> backbone``, the same
order as SpeechBrain's ``compute_features -> mean_var_norm -> embedding_model``.

FEFA's query is the time average of each frequency bin. A per-bin mean normalization
over time (SpeechBrain's ``InputNormalization(norm_type="sentence")``, VGGVox's loader)
makes every bin's time average exactly zero, so FEFA would see the same query for every
utterance and degrade to an input-independent gain. :class:`FrameNormalization`
normalizes each frame across frequency instead (as Xie et al.'s released loader does):
it removes loudness per frame but keeps the spectral shape, so the per-bin time averages
stay informative. Do not put a per-bin, over-time normalization before FEFA.
"""

import torch
from speechbrain.processing.features import STFT, spectral_magnitude


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

    Example
    -------
    >>> spec = Spectrogram()
    >>> spec(torch.randn(2, 16000)).shape
    torch.Size([2, 101, 257])
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
        self.power = power
        self.log = log
        self.eps = eps

    def forward(self, wavs):
        """Returns the spectrogram of ``wavs`` [batch, samples] as [batch, time, bins]."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            spec = spectral_magnitude(self.stft(wavs.float()), power=1.0 if self.power else 0.5)
            if self.log:
                spec = torch.log(spec + self.eps)
        return spec


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
