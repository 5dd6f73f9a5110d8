"""Synthetic speech for the demo corpus: speakers, sessions (channels), utterances.

Source-filter synthesis, vectorized with numpy: a speaker is a pitch range, a vocal
tract and speaking habits, drawn from ``(seed, speaker index)``; a session is the
nuisance (microphone, room, background noise, level); an utterance is a random sequence
of vowel-like, fricative-like and silent segments. ``docs/design.md`` describes the
choices; :mod:`fefa_speechbrain.data.synthetic` writes the corpus.
"""

import string
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy.signal import butter, fftconvolve, sosfilt

FIRST_SPEAKER_NUMBER = 10001
SESSION_ID_LENGTH = 11
SESSION_ALPHABET = string.ascii_letters + string.digits + "-_"

# Random streams: every generator is seeded by (seed, stream, indices...).
SPEAKER_STREAM, SESSION_STREAM, UTTERANCE_STREAM, TRIALS_STREAM = 0, 1, 2, 3

# F1-F3 (Hz) of 12 American English vowels, adult male averages (Hillenbrand et al. 1995).
VOWEL_FORMANTS_HZ = np.array(
    [
        [342, 2322, 3000],  # i
        [427, 2034, 2684],  # I
        [476, 2089, 2691],  # e
        [580, 1799, 2605],  # E
        [588, 1952, 2601],  # ae
        [768, 1333, 2522],  # a
        [652, 997, 2538],  # open o
        [497, 910, 2459],  # o
        [469, 1122, 2434],  # U
        [378, 997, 2343],  # u
        [623, 1200, 2550],  # V
        [474, 1379, 1710],  # r-coloured
    ],
    dtype=float,
)
UPPER_FORMANTS_HZ = np.array([3500.0, 4500.0])  # F4, F5 of the reference (male) tract
FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 200.0, 260.0])
# Fricative noise bands (centre, width in Hz) for the reference tract: s, sh, f, x.
FRICATIVE_BANDS_HZ = np.array([[6000, 1800], [3300, 900], [4500, 3500], [1900, 700]], float)

PAUSE, VOICED, UNVOICED = 0, 1, 2
SEGMENT_SECONDS = {PAUSE: (0.05, 0.3), VOICED: (0.07, 0.25), UNVOICED: (0.05, 0.15)}
# Probability of the next segment kind (pause, voiced, unvoiced) given the current one.
NEXT_KIND = {PAUSE: (0.0, 0.65, 0.35), VOICED: (0.3, 0.35, 0.35), UNVOICED: (0.15, 0.85, 0.0)}


@dataclass(frozen=True, eq=False)
class Voice:
    """The fixed vocal properties of one speaker (see :func:`draw_voice`)."""

    female: bool
    formant_scale: float
    vowel_formants: np.ndarray  # [n_vowels, 5] formant frequencies in Hz
    bandwidth_scale: float
    f0_hz: float
    f0_spread_semitones: float
    glottal_corner_hz: float
    glottal_slope: float
    breathiness: float
    jitter: float
    shimmer: float
    tempo: float
    fricative_scale: float
    fricative_level: float
    antiresonance_hz: float
    antiresonance_bandwidth_hz: float
    vowel_weights: np.ndarray  # [n_vowels] how often the speaker uses each vowel


@dataclass(frozen=True, eq=False)
class Session:
    """One recording session of a speaker: voice state, room, microphone, noise, level."""

    session_id: str
    f0_factor: float
    slope_shift: float
    room_response: np.ndarray
    channel_sos: np.ndarray
    snr_db: float
    noise_exponent: float
    noise_bumps: tuple  # ((centre_hz, gain_db, width_octaves), ...)
    hum_hz: float  # 0.0 when the session has no mains hum
    hum_fraction: float
    peak: float


def speaker_id(index):
    """VoxCeleb-style id of the speaker with 0-based ``index``.

    Example
    -------
    >>> speaker_id(0), speaker_id(39)
    ('id10001', 'id10040')
    """
    return f"id{FIRST_SPEAKER_NUMBER + index:05d}"


def draw_voice(seed, speaker_index):
    """The voice of speaker ``speaker_index``, from a generator seeded by (seed, index).

    Example
    -------
    >>> voice = draw_voice(0, 3)
    >>> voice.vowel_formants.shape
    (12, 5)
    >>> draw_voice(0, 3).f0_hz == voice.f0_hz != draw_voice(0, 4).f0_hz
    True
    """
    rng = np.random.default_rng([seed, SPEAKER_STREAM, speaker_index])
    female = bool(rng.random() < 0.5)
    formant_scale = float(np.exp(rng.normal(np.log(1.17 if female else 1.0), 0.07)))
    reference = np.concatenate(
        [VOWEL_FORMANTS_HZ, np.broadcast_to(UPPER_FORMANTS_HZ, (len(VOWEL_FORMANTS_HZ), 2))],
        axis=1,
    )
    formant_offsets = np.exp(rng.normal(0.0, 0.09, 5))
    vowel_offsets = np.exp(rng.normal(0.0, 0.06, reference.shape))
    return Voice(
        female=female,
        formant_scale=formant_scale,
        vowel_formants=reference * formant_scale * formant_offsets * vowel_offsets,
        bandwidth_scale=float(np.exp(rng.normal(0.0, 0.3))),
        f0_hz=float(np.clip(np.exp(rng.normal(np.log(210 if female else 118), 0.15)), 70, 330)),
        f0_spread_semitones=float(rng.uniform(1.0, 3.5)),
        glottal_corner_hz=float(np.exp(rng.uniform(np.log(80.0), np.log(600.0)))),
        glottal_slope=float(rng.uniform(1.4, 2.8)),
        breathiness=float(np.exp(rng.uniform(np.log(0.04), np.log(0.3)))),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.12)),
        tempo=float(rng.uniform(0.8, 1.25)),
        fricative_scale=formant_scale * float(np.exp(rng.normal(0.0, 0.06))),
        fricative_level=float(np.exp(rng.uniform(np.log(0.15), np.log(0.5)))),
        antiresonance_hz=formant_scale * float(rng.uniform(3800.0, 5200.0)),
        antiresonance_bandwidth_hz=float(rng.uniform(150.0, 500.0)),
        vowel_weights=rng.dirichlet(np.full(len(VOWEL_FORMANTS_HZ), 2.0)),
    )


def _session_id(rng):
    """An 11-character YouTube-like id whose first character is alphanumeric."""
    first = rng.integers(0, 62)
    rest = rng.integers(0, len(SESSION_ALPHABET), SESSION_ID_LENGTH - 1)
    return "".join(SESSION_ALPHABET[i] for i in [first, *rest])


def _room_response(rng, sample_rate):
    """Direct path plus an exponentially decaying noise tail (random RT60 and DRR)."""
    rt60 = rng.uniform(0.05, 0.4)
    drr_db = rng.uniform(3.0, 15.0)
    gap = int(rng.uniform(0.002, 0.01) * sample_rate)
    length = max(int(rt60 * sample_rate), gap + 2)
    times = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * times / rt60)
    tail[:gap] = 0.0
    tail *= np.sqrt(1.0 / (np.sum(tail**2) * 10 ** (drr_db / 10)))
    tail[0] += 1.0
    return tail


def _peaking_section(freq, gain_db, q, sample_rate):
    """One peaking-equalizer biquad (RBJ audio-EQ cookbook) as an SOS row."""
    amplitude = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * amplitude, -2 * np.cos(w0), 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, -2 * np.cos(w0), 1 - alpha / amplitude]
    return np.array(b + a) / a[0]


def _channel_filter(rng, sample_rate):
    """A random microphone: band-pass, 0-2 resonances and a first-order tilt, as SOS."""
    nyquist = sample_rate / 2
    low = np.exp(rng.uniform(np.log(50.0), np.log(150.0)))
    high = min(rng.uniform(5000.0, 7600.0), 0.95 * nyquist)
    order = int(rng.integers(1, 3))
    sections = [butter(order, [low, high], "bandpass", fs=sample_rate, output="sos")]
    for _ in range(int(rng.integers(0, 3))):
        freq = np.exp(rng.uniform(np.log(300.0), np.log(min(6000.0, 0.8 * nyquist))))
        gain_db = float(np.clip(rng.normal(0.0, 3.0), -6.0, 6.0))
        sections.append(_peaking_section(freq, gain_db, rng.uniform(0.7, 4.0), sample_rate)[None])
    tilt = rng.uniform(-0.2, 0.2)
    sections.append(np.array([[1.0, -tilt, 0.0, 1.0, 0.0, 0.0]]))
    return np.concatenate(sections)


def draw_session(seed, speaker_index, session_index, sample_rate=16000):
    """Session ``session_index`` of a speaker, from a generator seeded by all three.

    Example
    -------
    >>> session = draw_session(0, 0, 1)
    >>> len(session.session_id), 5.0 <= session.snr_db <= 30.0, session.peak < 0.9
    (11, True, True)
    >>> draw_session(0, 0, 1).session_id == session.session_id != draw_session(0, 0, 2).session_id
    True
    """
    rng = np.random.default_rng([seed, SESSION_STREAM, speaker_index, session_index])
    session_id = _session_id(rng)
    f0_factor = float(np.exp(rng.normal(0.0, 0.05)))
    slope_shift = float(rng.normal(0.0, 0.15))
    room = _room_response(rng, sample_rate)
    channel = _channel_filter(rng, sample_rate)
    snr_db = float(rng.uniform(10.0, 30.0))
    noise_exponent = float(rng.uniform(0.3, 1.7))
    bumps = tuple(
        (
            float(np.exp(rng.uniform(np.log(100.0), np.log(0.8 * sample_rate / 2)))),
            float(rng.uniform(-6.0, 8.0)),
            float(rng.uniform(0.2, 1.0)),
        )
        for _ in range(int(rng.integers(0, 3)))
    )
    has_hum = rng.random() < 0.3
    hum_hz = float(rng.choice([50.0, 60.0])) if has_hum else 0.0
    hum_fraction = float(rng.uniform(0.1, 0.6)) if has_hum else 0.0
    return Session(
        session_id=session_id,
        f0_factor=f0_factor,
        slope_shift=slope_shift,
        room_response=room,
        channel_sos=channel,
        snr_db=snr_db,
        noise_exponent=noise_exponent,
        noise_bumps=bumps,
        hum_hz=hum_hz,
        hum_fraction=hum_fraction,
        peak=float(rng.uniform(0.3, 0.85)),
    )


def _slow_contour(rng, times, low_hz=0.3, high_hz=2.5, components=3, step=0.005):
    """A smooth random contour with unit RMS: a sum of slow random sinusoids.

    Evaluated every ``step`` seconds and linearly interpolated at ``times``.
    """
    freqs = rng.uniform(low_hz, high_hz, components)
    phases = rng.uniform(0.0, 2 * np.pi, components)
    amplitudes = rng.uniform(0.3, 1.0, components)
    grid = np.arange(times[0], times[-1] + 2 * step, step)
    waves = np.sin(2 * np.pi * freqs[:, None] * grid[None] + phases[:, None])
    contour = amplitudes @ waves / np.sqrt(np.sum(amplitudes**2) / 2)
    return np.interp(times, grid, contour)


def _moving_average(x, width):
    """Centred moving average of ``width`` points along the last axis, edges held."""
    before, after = width // 2, width - 1 - width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before + 1, after)], mode="edge")
    padded[..., 0] = 0.0
    totals = np.cumsum(padded, axis=-1)
    return (totals[..., width:] - totals[..., :-width]) / width


def _smooth(x, width):
    """Triangular-weighted moving average spanning about ``width`` points (edges held)."""
    half = 2 * max(int(round(width / 4)), 0) + 1
    return _moving_average(_moving_average(x, half), half)


def _plan_segments(voice, rng, n_samples, sample_rate):
    """Segment kinds, lengths (samples), vowel, fricative and level of each segment.

    A short pause opens the utterance and a voiced segment always follows it.
    """
    lead = int(sample_rate * rng.uniform(0.02, min(0.25, 0.2 * n_samples / sample_rate)))
    kinds, lengths = [PAUSE], [max(lead, 1)]
    vowels, fricatives, levels = [0], [0], [0.0]
    kind, total = VOICED, lengths[0]
    while total < n_samples:
        seconds = rng.uniform(*SEGMENT_SECONDS[kind]) * (voice.tempo if kind == VOICED else 1.0)
        length = max(int(seconds * sample_rate), 1)
        kinds.append(kind)
        lengths.append(length)
        vowels.append(int(rng.choice(len(VOWEL_FORMANTS_HZ), p=voice.vowel_weights)))
        fricatives.append(int(rng.integers(len(FRICATIVE_BANDS_HZ))))
        levels.append(float(np.exp(rng.normal(0.0, 0.3))))
        total += length
        kind = int(rng.choice(3, p=NEXT_KIND[kind]))
    return tuple(np.array(v) for v in (kinds, lengths, vowels, fricatives, levels))


def _glottal_pulses(f0, rng, jitter, shimmer, sample_rate):
    """Pulse train at the instantaneous ``f0`` with jitter and shimmer; also the phase.

    Pulses sit at fractional positions (split linearly between two samples).
    """
    n = f0.size
    phase = np.cumsum(f0) / sample_rate
    cycle = np.floor(phase)
    starts = np.flatnonzero(np.diff(cycle)) + 1
    period = sample_rate / f0[starts]
    times = starts - (phase[starts] - cycle[starts]) * period
    times = times + jitter * period * rng.standard_normal(starts.size)
    times = np.clip(times, 0.0, n - 1.000001)
    amplitudes = np.exp(shimmer * rng.standard_normal(starts.size))
    first = np.floor(times).astype(int)
    weight = times - first
    pulses = np.bincount(first, amplitudes * (1 - weight), minlength=n)
    pulses += np.bincount(first + 1, amplitudes * weight, minlength=n)
    return pulses[:n], phase


def _stft(signals, n_fft, hop):
    """Short-time spectra [..., frames, bins] with a sqrt-Hann window; frame t is centred
    on sample ``t * hop - n_fft // 2``."""
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    extra = (-signals.shape[-1]) % hop
    padded = np.pad(signals, [(0, 0)] * (signals.ndim - 1) + [(n_fft, n_fft + extra)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    return sp_fft.rfft(frames * window, axis=-1)


def _istft(spectra, n_fft, hop, n_samples):
    """Weighted overlap-add inverse of :func:`_stft` (hop must be n_fft / 4)."""
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    frames = sp_fft.irfft(spectra, n_fft, axis=-1) * window
    n_frames = frames.shape[0]
    blocks = frames.reshape(n_frames, 4, hop)
    out = np.zeros((n_frames + 3, hop))
    for j in range(4):
        out[j : j + n_frames] += blocks[:, j]
    return out.reshape(-1)[n_fft : n_fft + n_samples] / 2.0


def _second_order(freq, bandwidth, z_inv, sample_rate):
    """``1 - 2 r cos(theta) z^-1 + r^2 z^-2`` on ``z_inv = (z^-1, z^-2)`` and at DC."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    a1 = -2 * radius * np.cos(2 * np.pi * freq / sample_rate)
    a2 = radius**2
    return 1 + a1 * z_inv[0] + a2 * z_inv[1], 1 + a1 + a2


def _tract_response(voice, formants, n_fft, sample_rate):
    """Complex response [frames, bins] of the vocal tract, unit gain at DC.

    Five cascaded resonators (formants [frames, 5]) and the speaker's fixed
    anti-resonance (a pair of zeros, like the piriform fossa's dip at 4-5 kHz).
    """
    z_inv = np.exp(-2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)
    z_inv = (z_inv, z_inv**2)
    bandwidths = FORMANT_BANDWIDTHS_HZ * voice.bandwidth_scale
    freq = min(voice.antiresonance_hz, 0.95 * sample_rate / 2)
    response, dc_gain = _second_order(freq, voice.antiresonance_bandwidth_hz, z_inv, sample_rate)
    response = response / dc_gain
    for k in range(formants.shape[1]):
        pole, pole_dc = _second_order(formants[:, k : k + 1], bandwidths[k], z_inv, sample_rate)
        response = response * pole_dc / pole
    return response


def _background_noise(session, rng, n_samples, sample_rate):
    """Coloured noise with the session's slope, bumps and hum, slowly fluctuating."""
    n_fast = sp_fft.next_fast_len(n_samples, real=True)
    freqs = np.fft.rfftfreq(n_fast, 1.0 / sample_rate)
    shape = np.maximum(freqs, 50.0) ** (-session.noise_exponent / 2)
    for centre, gain_db, width in session.noise_bumps:
        distance = np.log2(np.maximum(freqs, 1.0) / centre) / width
        shape *= 1 + (10 ** (gain_db / 20) - 1) * np.exp(-0.5 * distance**2)
    noise = sp_fft.irfft(sp_fft.rfft(rng.standard_normal(n_fast)) * shape, n_fast)[:n_samples]
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    times = np.arange(n_samples) / sample_rate
    if session.hum_hz:
        harmonics = np.arange(1, 7)[:, None]
        phases = rng.uniform(0.0, 2 * np.pi, (6, 1))
        hum = np.sum(np.sin(2 * np.pi * session.hum_hz * harmonics * times + phases) / harmonics, 0)
        hum /= np.sqrt(np.mean(hum**2))
        noise = np.sqrt(1 - session.hum_fraction) * noise + np.sqrt(session.hum_fraction) * hum
    return noise * np.clip(1 + 0.3 * _slow_contour(rng, times, 0.1, 1.0), 0.2, None)


def _mean_frame_power(spectra, frame_mask):
    """Mean over the selected frames of the total power of each frame (0 if none)."""
    if not frame_mask.any():
        return 0.0
    return float(np.mean(np.sum(np.abs(spectra[frame_mask]) ** 2, axis=-1)))


def _dry_speech(voice, session, rng, n_samples, sample_rate):
    """The speaker's utterance before room, noise and microphone."""
    n_fft = int(2 ** np.round(np.log2(0.032 * sample_rate)))
    hop = n_fft // 4
    kinds, lengths, vowels, fricatives, levels = _plan_segments(voice, rng, n_samples, sample_rate)
    segment = np.repeat(np.arange(kinds.size), lengths)[:n_samples]
    times = np.arange(n_samples) / sample_rate
    duration = n_samples / sample_rate

    # Excitation: pitch contour with intonation and declination, pulses, aspiration, frication.
    declination = rng.uniform(0.0, 0.15)
    f0 = (
        voice.f0_hz
        * session.f0_factor
        * np.exp(rng.normal(0.0, 0.03))
        * np.exp(voice.f0_spread_semitones * np.log(2) / 12 * _slow_contour(rng, times))
        * (1 - declination * times / duration)
    )
    pulses, phase = _glottal_pulses(f0, rng, voice.jitter, voice.shimmer, sample_rate)
    open_phase = 0.35 + 0.65 * 0.5 * (1 - np.cos(2 * np.pi * phase))
    aspiration = rng.standard_normal(n_samples) * open_phase * voice.breathiness
    aspiration *= np.sqrt(f0 / sample_rate)
    voiced_gate = _smooth(np.where(kinds == VOICED, levels, 0.0)[segment], 0.01 * sample_rate)
    voiced_gate *= np.clip(1 + 0.15 * _slow_contour(rng, times), 0.5, None)
    unvoiced_gate = _smooth(np.where(kinds == UNVOICED, levels, 0.0)[segment], 0.008 * sample_rate)
    frication = rng.standard_normal(n_samples) * unvoiced_gate
    sources = np.stack([pulses * voiced_gate, aspiration * voiced_gate, frication])
    spectra = _stft(sources, n_fft, hop)

    # Frame-level articulation: formant targets held through consonants and pauses.
    n_frames = spectra.shape[1]
    centres = np.clip(np.arange(n_frames) * hop - n_fft // 2, 0, n_samples - 1)
    frame_segment = segment[centres]
    last_vowel_segment = np.maximum.accumulate(np.where(kinds == VOICED, np.arange(kinds.size), 1))
    targets = np.log(voice.vowel_formants[vowels[last_vowel_segment]])[frame_segment]
    smoothing_frames = 0.06 * sample_rate / hop
    formants = np.exp(_smooth(targets.T, smoothing_frames).T)
    formants = np.minimum(formants, 0.95 * sample_rate / 2)
    tract = _tract_response(voice, formants, n_fft, sample_rate)

    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    slope = voice.glottal_slope + session.slope_shift
    glottal = (1 + (freqs / voice.glottal_corner_hz) ** 2) ** (-slope / 2)
    radiation = 1 - 0.97 * np.exp(-2j * np.pi * freqs / sample_rate)
    voiced = tract * (radiation * glottal * spectra[0] + radiation * np.sqrt(glottal) * spectra[1])

    band = FRICATIVE_BANDS_HZ[fricatives[frame_segment]] * voice.fricative_scale
    centre = np.minimum(band[:, :1], 0.45 * sample_rate)
    fricative = (np.exp(-0.5 * ((freqs - centre) / band[:, 1:]) ** 2) + 0.02) * spectra[2]
    voiced_frames = voiced_gate[centres] > 0.5 * np.max(voiced_gate)
    fricative_frames = unvoiced_gate[centres] > 0.5 * max(np.max(unvoiced_gate), 1e-12)
    fricative_power = _mean_frame_power(fricative, fricative_frames)
    if fricative_power > 0:
        ratio = _mean_frame_power(voiced, voiced_frames) / fricative_power
        fricative *= voice.fricative_level * np.sqrt(ratio)
    return _istft(voiced + fricative, n_fft, hop, n_samples)


def synthesize_utterance(voice, session, rng, n_samples, sample_rate=16000):
    """One utterance of ``voice`` recorded in ``session``: float64 waveform, peak < 0.9.

    Arguments
    ---------
    voice : Voice
        The speaker (:func:`draw_voice`).
    session : Session
        The recording conditions (:func:`draw_session`).
    rng : numpy.random.Generator
        Draws the content, the noise and the level.
    n_samples : int
        Length of the result.
    sample_rate : int
        Sampling rate in Hz.

    Example
    -------
    >>> wav = synthesize_utterance(draw_voice(0, 0), draw_session(0, 0, 0),
    ...                            np.random.default_rng(0), 8000)
    >>> wav.shape, bool(0.1 < np.abs(wav).max() < 0.9), bool(np.isfinite(wav).all())
    ((8000,), True, True)
    """
    speech = _dry_speech(voice, session, rng, n_samples, sample_rate)
    speech = fftconvolve(speech, session.room_response)[:n_samples]
    noise = _background_noise(session, rng, n_samples, sample_rate)
    speech_power = np.mean(speech**2)
    noise *= np.sqrt(speech_power / (np.mean(noise**2) * 10 ** (session.snr_db / 10)))
    recording = sosfilt(session.channel_sos, speech + noise)
    peak = min(session.peak * np.exp(rng.normal(0.0, 0.1)), 0.89)
    return recording * (peak / np.max(np.abs(recording)))
