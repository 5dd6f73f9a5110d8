"""Training augmentations SpeechBrain lacks: channel colouring, in-batch babble, coloured
noise and band-limiting.

When every training speaker is recorded through few channels (a microphone, a room), a
speaker classifier can recognise the channel instead of the voice: in training the two
are equally informative, and only the voice carries over to new recordings. SpeechBrain's
augmentations add noise, reverberation from impulse-response files, or cut narrow
frequency bands (``DropFreq``); none of them recolours the whole spectrum the way another
microphone does. :class:`RandomChannel` does: each training utterance is filtered by its
own smooth random gain curve over frequency (a spectral tilt plus a few broad peaks and
dips, within +-``max_gain_db``), applied in the Fourier domain, with the utterance's RMS
kept.

:class:`Babble` mixes other utterances of the batch into each one (SpeechBrain 1.x has
no babble augmentation). Both take and return waveforms ``[batch, time]`` with relative
lengths, like SpeechBrain's time-domain augmentations, so they go into an ``Augmenter``.
The recipe applies ``RandomChannel`` in place (no extra copies) with
``random_channel: True``, and ``Babble`` through the Augmenter with ``augment_babble``.
"""

import math

import torch

from fefa_speechbrain.lobes.lengths import absolute_lengths


class RandomChannel(torch.nn.Module):
    """Filters each utterance by its own random smooth gain curve (microphone-like).

    The gain in dB at frequency ``f`` is ``tilt * log2(f / 1 kHz)`` plus ``n_peaks``
    (drawn in 0..``max_peaks``) Gaussian bumps on a log-frequency axis, centres
    log-uniform in [``low_hz``, ``high_hz``], widths uniform in 0.3-1.5 octaves, gains
    uniform in +-``max_gain_db``; the sum is clipped to +-``max_gain_db``. Frequencies
    below 50 Hz take the 50 Hz gain. Padded samples stay zero and each utterance keeps
    its RMS over its valid samples.

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the waveforms.
    max_gain_db : float
        Largest boost or cut, in dB.
    max_tilt_db : float
        Largest spectral tilt, in dB per octave (drawn uniformly in +-this).
    max_peaks : int
        Largest number of peaks or dips per utterance.
    low_hz, high_hz : float
        Range of the peak centres.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> augment = RandomChannel(16000)
    >>> wavs = torch.randn(2, 16000)
    >>> coloured = augment(wavs, torch.tensor([1.0, 0.5]))
    >>> coloured.shape, bool(coloured[1, 8000:].abs().max() == 0)
    (torch.Size([2, 16000]), True)
    >>> flat = RandomChannel(16000, max_gain_db=0.0, max_tilt_db=0.0)
    >>> torch.allclose(flat(wavs), wavs, atol=1e-5)
    True
    """

    def __init__(
        self,
        sample_rate=16000,
        max_gain_db=8.0,
        max_tilt_db=2.0,
        max_peaks=3,
        low_hz=150.0,
        high_hz=6000.0,
    ):
        super().__init__()
        if max_gain_db < 0 or max_tilt_db < 0 or max_peaks < 0:
            raise ValueError("max_gain_db, max_tilt_db and max_peaks must be >= 0")
        if not 0 < low_hz < high_hz:
            raise ValueError(f"need 0 < low_hz < high_hz, got {low_hz}, {high_hz}")
        self.sample_rate = sample_rate
        self.max_gain_db = float(max_gain_db)
        self.max_tilt_db = float(max_tilt_db)
        self.max_peaks = int(max_peaks)
        self.low_hz = float(low_hz)
        self.high_hz = float(high_hz)

    def draw_gains_db(self, batch, frequencies):
        """Random gain curves [batch, n_freq] in dB at ``frequencies`` (Hz, [n_freq])."""
        octaves = torch.log2(frequencies.clamp(min=50.0) / 1000.0)
        tilt = (2 * torch.rand(batch, 1) - 1) * self.max_tilt_db
        gains = tilt * octaves
        n_peaks = torch.randint(0, self.max_peaks + 1, (batch, 1))
        span = math.log2(self.high_hz / self.low_hz)
        for index in range(self.max_peaks):
            centre = math.log2(self.low_hz / 1000.0) + span * torch.rand(batch, 1)
            width = 0.3 + 1.2 * torch.rand(batch, 1)
            gain = (2 * torch.rand(batch, 1) - 1) * self.max_gain_db
            bump = gain * torch.exp(-0.5 * ((octaves - centre) / width) ** 2)
            gains = gains + bump * (index < n_peaks)
        return gains.clamp(-self.max_gain_db, self.max_gain_db)

    def apply_gains_db(self, waveforms, gains_db, lengths=None):
        """Filters ``waveforms`` [batch, time] by ``gains_db`` [batch, time // 2 + 1]."""
        n_samples = waveforms.shape[1]
        valid = torch.ones_like(waveforms, dtype=torch.bool)
        if lengths is not None:
            steps = torch.arange(n_samples, device=waveforms.device)
            valid = steps[None, :] < absolute_lengths(lengths, n_samples)[:, None]
        signal = waveforms.float() * valid
        spectrum = torch.fft.rfft(signal, n=n_samples, dim=1)
        gains = (10.0 ** (gains_db / 20.0)).to(spectrum.device)
        filtered = torch.fft.irfft(spectrum * gains, n=n_samples, dim=1) * valid
        energy_in = signal.pow(2).sum(dim=1, keepdim=True)
        energy_out = filtered.pow(2).sum(dim=1, keepdim=True)
        scale = torch.sqrt(energy_in / energy_out.clamp(min=1e-20))
        return (filtered * scale).to(waveforms.dtype)

    def forward(self, waveforms, lengths=None):
        """waveforms [batch, time], lengths relative [batch] -> recoloured [batch, time]."""
        n_samples = waveforms.shape[1]
        frequencies = torch.fft.rfftfreq(n_samples, d=1.0 / self.sample_rate)
        gains = self.draw_gains_db(waveforms.shape[0], frequencies)
        return self.apply_gains_db(waveforms, gains.to(waveforms.device), lengths)


class Babble(torch.nn.Module):
    """Adds the sum of ``speaker_count`` other utterances of the batch to each utterance.

    Utterance ``i`` gets utterances ``i + 1, ..., i + speaker_count`` (modulo the batch,
    so with batches drawn at random they are other speakers almost always), each cut to
    ``i``'s valid length, summed and scaled to a signal-to-babble ratio drawn uniformly in
    [``snr_low``, ``snr_high``] dB over ``i``'s valid samples. Padded samples stay zero;
    a batch of one is returned unchanged.

    Arguments
    ---------
    speaker_count : int
        How many other utterances make the babble (at most the batch size minus one).
    snr_low, snr_high : float
        Range of the signal-to-babble ratio, in dB.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> babble = Babble(speaker_count=2, snr_low=10.0, snr_high=10.0)
    >>> wavs = torch.randn(3, 16000)
    >>> mixed = babble(wavs, torch.tensor([1.0, 1.0, 0.5]))
    >>> added = mixed - wavs
    >>> round(float(10 * torch.log10(wavs[0].pow(2).mean() / added[0].pow(2).mean())), 3)
    10.0
    >>> bool(mixed[2, 8000:].abs().max() == 0)
    True
    """

    def __init__(self, speaker_count=3, snr_low=10.0, snr_high=20.0):
        super().__init__()
        if speaker_count < 1:
            raise ValueError(f"speaker_count must be >= 1, got {speaker_count}")
        if snr_low > snr_high:
            raise ValueError(f"need snr_low <= snr_high, got {snr_low}, {snr_high}")
        self.speaker_count = int(speaker_count)
        self.snr_low = float(snr_low)
        self.snr_high = float(snr_high)

    def forward(self, waveforms, lengths=None):
        """waveforms [batch, time], lengths relative [batch] -> with babble [batch, time]."""
        batch, n_samples = waveforms.shape
        if batch < 2:
            return waveforms
        valid = torch.ones_like(waveforms, dtype=torch.bool)
        if lengths is not None:
            steps = torch.arange(n_samples, device=waveforms.device)
            valid = steps[None, :] < absolute_lengths(lengths, n_samples)[:, None]
        signal = waveforms.float() * valid
        babble = torch.zeros_like(signal)
        for shift in range(1, min(self.speaker_count, batch - 1) + 1):
            babble = babble + torch.roll(signal, shifts=-shift, dims=0)
        babble = babble * valid
        count = valid.sum(dim=1, keepdim=True).clamp(min=1)
        power_signal = signal.pow(2).sum(dim=1, keepdim=True) / count
        power_babble = babble.pow(2).sum(dim=1, keepdim=True) / count
        snr_db = self.snr_low + (self.snr_high - self.snr_low) * torch.rand(
            batch, 1, device=waveforms.device
        )
        scale = torch.sqrt(power_signal / power_babble.clamp(min=1e-20) / 10.0 ** (snr_db / 10.0))
        return (signal + babble * scale).to(waveforms.dtype)


class ColouredNoise(torch.nn.Module):
    """Adds noise of a random colour (white, pink, brown or blue) at a random SNR.

    SpeechBrain's ``AddNoise`` without a noise CSV adds white noise only; recordings meet
    hum-like (brown), pink (fans, traffic) and hiss-like (blue) noise too. The noise is
    white Gaussian noise shaped by ``f ** (-exponent / 2)`` in the Fourier domain
    (exponent 0 white, 1 pink, 2 brown, -1 blue), scaled so that its power over each
    utterance's valid samples is the signal's power there divided by the SNR. Padded
    samples stay zero.

    Arguments
    ---------
    snr_low, snr_high : float
        Range of the signal-to-noise ratio, in dB (drawn uniformly per utterance).
    exponents : sequence of float
        The colours to draw from (uniformly per utterance).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> add = ColouredNoise(snr_low=10, snr_high=10, exponents=(1.0,))
    >>> wavs = torch.randn(2, 16000)
    >>> noisy = add(wavs, torch.tensor([1.0, 0.5]))
    >>> noise = noisy - wavs
    >>> snr = 10 * torch.log10(wavs[0].pow(2).mean() / noise[0].pow(2).mean())
    >>> round(float(snr), 3), bool(noise[1, 8000:].abs().max() == 0)
    (10.0, True)
    """

    def __init__(self, snr_low=0.0, snr_high=30.0, exponents=(0.0, 1.0, 2.0, -1.0)):
        super().__init__()
        self.snr_low, self.snr_high = snr_low, snr_high
        self.exponents = tuple(float(e) for e in exponents)

    def forward(self, waveforms, lengths=None):
        """waveforms [batch, time], relative lengths -> noisy waveforms, same shape."""
        batch, samples = waveforms.shape[:2]
        if lengths is None:
            lengths = torch.ones(batch, device=waveforms.device)
        valid = absolute_lengths(lengths, samples)
        mask = torch.arange(samples, device=waveforms.device)[None, :] < valid[:, None]
        spectrum = torch.fft.rfft(torch.randn(batch, samples, device=waveforms.device), dim=1)
        freqs = torch.arange(spectrum.shape[1], device=waveforms.device).clamp(min=1).float()
        choice = torch.randint(len(self.exponents), (batch,))
        exponent = torch.tensor(self.exponents, device=waveforms.device)[choice]
        spectrum = spectrum * freqs[None, :] ** (-exponent[:, None] / 2.0)
        noise = torch.fft.irfft(spectrum, n=samples, dim=1) * mask
        count = valid.clamp(min=1).float()
        signal_power = (waveforms * mask).pow(2).sum(1) / count
        noise_power = noise.pow(2).sum(1) / count
        snr = torch.empty(batch, device=waveforms.device).uniform_(self.snr_low, self.snr_high)
        scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-20) * 10 ** (snr / 10)))
        return waveforms + noise * scale[:, None]


class BandLimit(torch.nn.Module):
    """Telephone-like band-limiting: a round trip through a lower sampling rate.

    Resamples the batch to a rate drawn from ``low_rates`` and back (torchaudio's
    windowed-sinc resampler), which removes everything above half that rate, as an
    8 kHz phone line or a low-rate recording does. The length is kept.

    Arguments
    ---------
    sample_rate : int
        Rate of the waveforms.
    low_rates : sequence of int
        The rates to go through (one drawn per batch).

    Example
    -------
    >>> t = torch.arange(16000) / 16000
    >>> wavs = torch.sin(2 * math.pi * 500 * t) + torch.sin(2 * math.pi * 6000 * t)
    >>> out = BandLimit(16000, low_rates=(8000,))(wavs[None])
    >>> spectrum = torch.fft.rfft(out[0]).abs()
    >>> bool(spectrum[6000] < 0.01 * spectrum[500]), out.shape
    (True, torch.Size([1, 16000]))
    """

    def __init__(self, sample_rate=16000, low_rates=(8000,)):
        super().__init__()
        self.sample_rate = sample_rate
        self.low_rates = tuple(int(rate) for rate in low_rates)

    def forward(self, waveforms):
        """waveforms [batch, time] -> band-limited waveforms, same shape."""
        import torchaudio

        rate = self.low_rates[int(torch.randint(len(self.low_rates), (1,)))]
        low = torchaudio.functional.resample(waveforms, self.sample_rate, rate)
        back = torchaudio.functional.resample(low, rate, self.sample_rate)
        samples = waveforms.shape[1]
        if back.shape[1] < samples:
            back = torch.nn.functional.pad(back, (0, samples - back.shape[1]))
        return back[:, :samples]
