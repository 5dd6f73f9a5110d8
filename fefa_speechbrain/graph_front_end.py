"""The spectrogram front-end in a form that traces into ONNX: the STFT as a fixed convolution.

``torch.stft`` does not export with the TorchScript-based ONNX exporter. Here the short-time
Fourier transform of a :class:`~fefa_speechbrain.lobes.features.Spectrogram` is a 1-D
convolution whose kernels are the window times the cosine and minus-sine rows of the DFT
(one output channel per bin and part), with the stride of the hop, after the same
padding as SpeechBrain's ``STFT`` (``center=True``, ``pad_mode="constant"``: zeros, by
default). Magnitude, power and ``log`` follow the module's settings, read from the module.
:class:`WaveformFrontEnd` adds the frame-exact lengths, the model's normalization and the
padding to the model's ``min_frames``, so ``WaveformFrontEnd(modules)(wavs, lengths)``
gives ``embed_waveforms(modules, wavs, lengths)``, as ``[batch, dim]``.

:func:`describe_preprocessing` writes what the front-end does from the modules themselves
(the export message and the graph's metadata use it).
"""

import math

import torch

from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram, UtteranceNormalization

SPECTRAL_EPS = 1e-14  # speechbrain.processing.features.spectral_magnitude's eps (magnitude)
PAD_MODES = ("constant", "reflect")


class FrontEndError(ValueError):
    """A front-end that cannot go inside the graph."""


class ConvSpectrogram(torch.nn.Module):
    """A :class:`Spectrogram` computed by a fixed convolution: same output, traceable.

    Arguments
    ---------
    spectrogram : Spectrogram
        The module to reproduce (its STFT's window, FFT size, hop, centring, padding,
        normalization, and its power, log and eps).

    Example
    -------
    >>> spec = Spectrogram(log=True)
    >>> wavs = torch.randn(2, 8000)
    >>> bool((ConvSpectrogram(spec)(wavs) - spec(wavs)).abs().max() < 1e-3)
    True
    """

    def __init__(self, spectrogram):
        super().__init__()
        if not isinstance(spectrogram, Spectrogram):
            raise FrontEndError(
                f"compute_features is {type(spectrogram).__name__}: only "
                "fefa_speechbrain.lobes.features.Spectrogram goes inside the graph"
            )
        stft = spectrogram.stft
        if not stft.onesided:
            raise FrontEndError("compute_features: a two-sided STFT does not go inside the graph")
        if stft.center and stft.pad_mode not in PAD_MODES:
            raise FrontEndError(
                f"compute_features: STFT pad_mode {stft.pad_mode!r} is not one of {PAD_MODES}"
            )
        self.n_fft, self.hop, self.center = int(stft.n_fft), int(stft.hop_length), bool(stft.center)
        self.pad_mode = stft.pad_mode
        self.power, self.log, self.eps = spectrogram.power, spectrogram.log, spectrogram.eps
        kernel = dft_kernel(stft)
        if getattr(spectrogram, "remove_dc", False):  # each frame's mean removed: linear, so
            kernel = _without_frame_mean(kernel, int(stft.win_length))  # in the kernel
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, wavs):
        """wavs [batch, samples] -> [batch, frames, n_fft // 2 + 1]."""
        x = wavs.float().unsqueeze(1)
        if self.center:
            half = self.n_fft // 2
            x = torch.nn.functional.pad(x, (half, half), mode=self.pad_mode)
        parts = torch.nn.functional.conv1d(x, self.kernel, stride=self.hop)
        real, imag = parts.chunk(2, dim=1)
        spec = real * real + imag * imag
        if not self.power:
            spec = torch.sqrt(spec + SPECTRAL_EPS)
        if self.log:
            spec = torch.log(spec + self.eps)
        return spec.transpose(1, 2)

    def frame_counts(self, samples):
        """Frames of signals of ``samples`` samples (a float tensor), as ``torch.stft`` frames them."""
        if self.center:
            return 1 + torch.floor(samples / self.hop)
        return 1 + torch.floor((samples - self.n_fft) / self.hop)


def dft_kernel(stft):
    """Conv1d weights [2 * bins, 1, n_fft] of a SpeechBrain ``STFT``: window x cos, window x -sin.

    The window (``win_length`` samples) sits in the middle of the ``n_fft`` samples, as in
    ``torch.stft``. Built in float64, stored in float32.

    Example
    -------
    >>> from speechbrain.processing.features import STFT
    >>> dft_kernel(STFT(16000, n_fft=512)).shape
    torch.Size([514, 1, 512])
    """
    n_fft, win = int(stft.n_fft), int(stft.win_length)
    window = torch.zeros(n_fft, dtype=torch.float64)
    left = (n_fft - win) // 2
    window[left:left + win] = stft.window.double()
    sample = torch.arange(n_fft, dtype=torch.float64)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.outer(bins, sample) / n_fft
    kernel = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)])
    if stft.normalized_stft:
        kernel = kernel / math.sqrt(n_fft)
    return kernel.unsqueeze(1).float()


def _without_frame_mean(kernel, win):
    """The kernel applied to each frame minus its mean over the window's ``win`` samples:
    ``K'[f, n] = K[f, n] - sum_m K[f, m] / win`` on the window's support."""
    n_fft = kernel.shape[-1]
    left = (n_fft - win) // 2
    kernel = kernel.double().clone()
    total = kernel.sum(dim=-1, keepdim=True)
    kernel[..., left:left + win] -= total / win
    return kernel.float()


class WaveformFrontEnd(torch.nn.Module):
    """Waveforms -> embeddings [batch, dim], the whole chain as one traceable module.

    ``ConvSpectrogram(compute_features)``, frame-exact relative lengths (as
    ``Spectrogram.frame_lengths``), ``mean_var_norm(feats, lengths)``, zero padding to the
    model's ``min_frames`` (a trace keeps one branch of the backbones' own padding), then
    ``embedding_model(feats, lengths)``.

    Arguments
    ---------
    modules : dict
        ``compute_features`` (a :class:`Spectrogram`), ``mean_var_norm`` and
        ``embedding_model``, in eval mode.

    Example
    -------
    >>> from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
    >>> modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": ThinResNet34(width=0.125).eval()}
    >>> WaveformFrontEnd(modules)(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 512])
    """

    def __init__(self, modules):
        super().__init__()
        self.spectrogram = ConvSpectrogram(modules["compute_features"])
        self.normalization = modules["mean_var_norm"]
        self.embedding_model = modules["embedding_model"]
        self.min_frames = int(getattr(self.embedding_model, "min_frames", 1))

    def forward(self, wavs, lengths):
        feats = self.spectrogram(wavs)
        samples = torch._shape_as_tensor(wavs)[1].double()  # traced: dynamic in the graph
        frames = torch._shape_as_tensor(feats)[1].double()
        valid = self.spectrogram.frame_counts(torch.round(lengths.double() * samples))
        feat_lens = (valid / frames).float()
        feats = self.normalization(feats, feat_lens)
        if self.min_frames > 1:
            feats, feat_lens = self._pad_to_min_frames(feats, valid, frames)
        return self.embedding_model(feats, feat_lens).flatten(1)

    def _pad_to_min_frames(self, feats, valid, frames):
        """Zero frames up to ``min_frames`` (none when longer), lengths kept in frames."""
        zeros = feats.new_zeros(feats.shape[0], self.min_frames, feats.shape[2])
        keep = torch.clamp(frames, min=float(self.min_frames))
        index = torch.arange(keep.long(), device=feats.device)
        feats = torch.cat([feats, zeros], dim=1).index_select(1, index)
        return feats, (valid / keep).float()


def describe_preprocessing(modules):
    """What the model does to a waveform before its embedding network, read from its modules.

    Example
    -------
    >>> print(describe_preprocessing({"compute_features": Spectrogram(log=True),
    ...                               "mean_var_norm": FrameNormalization()}))
    16 kHz mono float32 waveform -> Spectrogram: STFT with a 400-sample hamming window, a
    160-sample hop, 512-point FFT, centred frames (constant padding), magnitude, log(x +
    1e-06); 257 bins -> FrameNormalization: each frame to zero mean and unit variance over
    its bins (eps 1e-05)
    """
    spec, norm = modules["compute_features"], modules["mean_var_norm"]
    parts = [_describe_spectrogram(spec), _describe_normalization(norm)]
    rate = getattr(getattr(spec, "stft", None), "sample_rate", 16000)
    return f"{rate / 1000:g} kHz mono float32 waveform -> " + " -> ".join(parts)


def _describe_spectrogram(spec):
    if not isinstance(spec, Spectrogram):
        return type(spec).__name__
    stft = spec.stft
    window = getattr(stft.window, "window_name", None) or _window_name(stft.window)
    centred = f"centred frames ({stft.pad_mode} padding)" if stft.center else "frames from the start"
    values = "power" if spec.power else "magnitude"
    text = (f"Spectrogram: STFT with a {stft.win_length}-sample {window} window, a "
            f"{stft.hop_length}-sample hop, {stft.n_fft}-point FFT, {centred}, {values}")
    if stft.normalized_stft:
        text += " (normalized STFT)"
    if getattr(spec, "remove_dc", False):
        text += ", each frame's mean removed before the window"
    if spec.log:
        text += f", log(x + {spec.eps:g})"
    return text + f"; {spec.n_bins} bins"


def _window_name(window):
    """hamming / hann when the window is one of torch's (periodic), else 'custom'."""
    length = window.numel()
    for name, make in (("hamming", torch.hamming_window), ("hann", torch.hann_window)):
        if torch.allclose(window.double(), make(length, dtype=torch.float64), atol=1e-6):
            return name
    return "custom"


def _describe_normalization(norm):
    if type(norm) is FrameNormalization:
        return (f"FrameNormalization: each frame to zero mean and unit variance over its "
                f"bins (eps {norm.eps:g})")
    if type(norm) is UtteranceNormalization:
        floor = ("no floor" if norm.floor is None
                 else f"values below the utterance's peak - {norm.floor * 20 / math.log(10):g} dB "
                 "raised to that floor")
        return (f"UtteranceNormalization: {floor}, then the utterance's mean and standard "
                f"deviation over its valid frames and all bins removed (eps {norm.eps:g}), "
                "padding frames zero")
    return type(norm).__name__
