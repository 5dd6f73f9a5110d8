"""Robust audio reading, and the policy for problematic audio files.

Everything is read with ``soundfile`` (libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...)
and delivered as a mono float32 waveform at the target rate (16 kHz by default).

Details: ``docs/reference.md`` (fefa_speechbrain.data.audio).
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch
import torchaudio

TARGET_SAMPLE_RATE = 16000
MIN_SAMPLES = 400
SILENCE_PEAK = 1e-4
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.001
CHECK_MODES = ("full", "header", "none")  # how much of every file the preparation reads
UNSUPPORTED_EXTENSIONS = (".m4a", ".aac", ".mp4")

# torchaudio's default sinc kernel (used by load_audio): 6 zero crossings, rolloff 0.99.
_LOWPASS_WIDTH = 6
_ROLLOFF = 0.99


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the problem."""


@dataclass
class AudioInfo:
    """What :func:`inspect_audio` found about one file.

    Attributes
    ----------
    path : str
        The file.
    ok : bool
        True when the file is usable (``action`` is ``"keep"`` or ``"convert"``).
    action : str
        ``"keep"``, ``"convert"`` (down-mix and/or resample at load) or ``"skip"``.
    reasons : list of str
        Every problem found (empty for a clean file); a kept file with reasons is kept
        with a warning.
    sample_rate : int or None
        Native rate (None when the header is unreadable).
    channels : int or None
        Native number of channels.
    frames : int or None
        Native number of samples per channel.
    duration : float or None
        Seconds.
    warnings : list of str
        The reasons of a kept file that are warnings (truncated, clipped), not
        conversions: what a reader of the file should be told.
    """

    path: str
    ok: bool
    action: str
    reasons: list = field(default_factory=list)
    sample_rate: int = None
    channels: int = None
    frames: int = None
    duration: float = None
    warnings: list = field(default_factory=list)


def conversion_hint(path):
    """The message for audio that soundfile cannot read (m4a/aac/mp4).

    Example
    -------
    >>> print(conversion_hint("id00012/abc/01.m4a"))  # doctest: +NORMALIZE_WHITESPACE
    id00012/abc/01.m4a: m4a/aac audio cannot be read by soundfile; convert it to WAV
    first, e.g. ffmpeg -i id00012/abc/01.m4a -ac 1 -ar 16000 id00012/abc/01.wav
    """
    stem = os.path.splitext(os.fspath(path))[0]
    return (
        f"{path}: m4a/aac audio cannot be read by soundfile; convert it to WAV first, "
        f"e.g. ffmpeg -i {path} -ac 1 -ar 16000 {stem}.wav"
    )


def is_unsupported(path):
    """True for the compressed formats soundfile cannot read (m4a, aac, mp4).

    Example
    -------
    >>> is_unsupported("a/b.M4A"), is_unsupported("a/b.flac")
    (True, False)
    """
    return os.fspath(path).lower().endswith(UNSUPPORTED_EXTENSIONS)


def resampled_length(frames, orig_rate, target_rate=TARGET_SAMPLE_RATE):
    """Number of samples ``frames`` native samples become at ``target_rate``.

    Same rounding as :func:`torchaudio.functional.resample` (upwards).

    Example
    -------
    >>> resampled_length(8000, 8000), resampled_length(44101, 44100), resampled_length(5, 16000)
    (16000, 16001, 5)
    """
    if orig_rate == target_rate:
        return int(frames)
    g = math.gcd(int(orig_rate), int(target_rate))
    return -(-int(frames) * (target_rate // g) // (orig_rate // g))


def _skip(path, reason, **header):
    return AudioInfo(path=path, ok=False, action="skip", reasons=[reason], **header)


def inspect_audio(path, min_samples=MIN_SAMPLES, full=True, sample_rate=TARGET_SAMPLE_RATE):
    """Checks one file against the policy of this module; never raises for bad audio.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    min_samples : int
        Files shorter than this many samples at ``sample_rate`` are skipped.
    full : bool
        If True, read every sample (catches corrupt data, NaN/inf, silence and
        clipping); if False, read only the header.
    sample_rate : int
        The rate the data will be used at.

    Returns
    -------
    AudioInfo

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> folder = tempfile.mkdtemp()
    >>> t = np.arange(16000) / 16000
    >>> tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    >>> sf.write(os.path.join(folder, "ok.wav"), tone, 16000)
    >>> sf.write(os.path.join(folder, "stereo.wav"), np.stack([tone, tone], 1), 16000)
    >>> sf.write(os.path.join(folder, "silent.wav"), np.zeros(16000), 16000)
    >>> info = inspect_audio(os.path.join(folder, "ok.wav"))
    >>> info.action, info.reasons, info.sample_rate, info.channels, info.frames, info.duration
    ('keep', [], 16000, 1, 16000, 1.0)
    >>> inspect_audio(os.path.join(folder, "stereo.wav")).action
    'convert'
    >>> info = inspect_audio(os.path.join(folder, "silent.wav"))
    >>> info.ok, info.action, info.reasons
    (False, 'skip', ['silent: peak amplitude 0 < 0.0001'])
    """
    path = os.fspath(path)
    if is_unsupported(path):
        return _skip(path, conversion_hint(path))
    try:
        if os.path.getsize(path) == 0:
            return _skip(path, "empty: 0-byte file")
        header = sf.info(path)
    except Exception as err:  # libsndfile reports every unreadable file differently
        return _skip(path, f"unreadable: {_one_line(err)}")
    described = dict(
        sample_rate=int(header.samplerate),
        channels=int(header.channels),
        frames=int(header.frames),
        duration=header.frames / header.samplerate if header.samplerate else None,
    )
    if header.samplerate <= 0 or header.channels <= 0:
        return _skip(path, "unreadable: header has no valid sample rate or channels", **described)
    truncation = _truncation_warning(path, header)
    if full:
        try:
            data, _ = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:
            return _skip(path, f"corrupt: samples cannot be read ({_one_line(err)})", **described)
        described["frames"] = int(data.shape[0])
        described["duration"] = data.shape[0] / header.samplerate
    reasons = _length_problems(described["frames"], header.samplerate, min_samples, sample_rate)
    if full and not reasons:
        reasons = _content_problems(data)
    if reasons:
        return AudioInfo(path=path, ok=False, action="skip", reasons=reasons, **described)
    reasons = _conversions(header.channels, header.samplerate, sample_rate)
    action = "convert" if reasons else "keep"
    warnings = truncation + (_clipping_warning(data) if full else [])
    return AudioInfo(path=path, ok=True, action=action, reasons=reasons + warnings,
                     warnings=warnings, **described)


WAV_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                    "FLOAT": 4, "DOUBLE": 8, "ULAW": 1, "ALAW": 1}


def _declared_wav_frames(path, header):
    """Frames the WAV header's data chunk declares (None when unknown or not a WAV)."""
    width = WAV_SAMPLE_BYTES.get(header.subtype)
    if header.format != "WAV" or width is None:
        return None
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    position = 12  # after "RIFF", size, "WAVE"
    while position + 8 <= len(head):
        chunk = head[position:position + 4]
        size = int.from_bytes(head[position + 4:position + 8], "little")
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF):  # streamed: size not written
                return None
            return size // (width * header.channels)
        position += 8 + size + (size & 1)
    return None


def _truncation_warning(path, header):
    """A warning when a WAV holds fewer samples than its header declares.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "cut.wav")
    >>> sf.write(path, np.full(1000, 0.1), 16000, subtype="PCM_16")
    >>> data = open(path, "rb").read()
    >>> _ = open(path, "wb").write(data[:len(data) - 1000])
    >>> _truncation_warning(path, sf.info(path))
    ['truncated: the header declares 1000 samples, the file holds 500 (kept with those)']
    """
    try:
        declared = _declared_wav_frames(path, header)
    except OSError:
        return []
    if declared is None or declared <= header.frames:
        return []
    return [
        f"truncated: the header declares {declared} samples, the file holds "
        f"{header.frames} (kept with those)"
    ]


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def _length_problems(frames, native_rate, min_samples, target_rate):
    if frames == 0:
        return ["empty: no samples"]
    length = resampled_length(frames, native_rate, target_rate)
    if length < min_samples:
        why = (
            "one 25 ms frame" if min_samples == MIN_SAMPLES
            else f"the model's shortest input, {min_samples / target_rate:.3f} s"
        )
        return [f"too short: {length} samples at {target_rate} Hz < {min_samples} ({why})"]
    return []


def _content_problems(data):
    if not np.isfinite(data).all():
        return ["contains NaN or infinite samples"]
    peak = float(np.abs(data.mean(axis=1)).max())
    if peak < SILENCE_PEAK:
        return [f"silent: peak amplitude {peak:.3g} < {SILENCE_PEAK:g}"]
    return []


def _conversions(channels, native_rate, target_rate):
    reasons = []
    if channels > 1:
        reasons.append(f"{channels} channels: down-mixed to mono by averaging")
    if native_rate != target_rate:
        reasons.append(f"sample rate {native_rate} Hz: resampled to {target_rate} Hz")
    return reasons


def _clipping_warning(data):
    fraction = float(np.mean(np.abs(data) >= CLIP_LEVEL))
    if fraction > CLIP_FRACTION:
        return [
            f"clipped: {100 * fraction:.2f}% of samples at full scale (|x| >= {CLIP_LEVEL})"
        ]
    return []


def load_audio(path, start=0, stop=None, sample_rate=TARGET_SAMPLE_RATE):
    """Reads a mono float32 waveform at ``sample_rate``.

    Multichannel audio is down-mixed by averaging the channels; other rates are
    resampled with :func:`torchaudio.functional.resample`. Only the part of the file
    that ``[start, stop)`` needs is read (plus the resampling filter's context when the
    rate differs), so reading a 3 s chunk of a long file is cheap; the result equals the
    same slice of the whole file loaded and resampled at once.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    start : int
        First sample, counted at ``sample_rate``.
    stop : int or None
        One past the last sample at ``sample_rate``; None (or past the end) means the end.
    sample_rate : int
        Target rate.

    Returns
    -------
    torch.Tensor
        Float32 tensor [samples].

    Raises
    ------
    AudioError
        Naming the file, for m4a/aac (with the ffmpeg command), unreadable or corrupt
        files, an empty file or segment, and NaN/inf samples.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "stereo8k.wav")
    >>> left = np.full(8000, 0.5, dtype="float32")
    >>> sf.write(path, np.stack([left, 0 * left], 1), 8000, subtype="FLOAT")
    >>> wav = load_audio(path)
    >>> wav.shape, wav.dtype, round(float(wav[8000]), 4)
    (torch.Size([16000]), torch.float32, 0.25)
    >>> load_audio(path, start=100, stop=400).shape
    torch.Size([300])
    """
    path = os.fspath(path)
    if is_unsupported(path):
        raise AudioError(conversion_hint(path))
    if start < 0 or (stop is not None and stop <= start):
        raise AudioError(f"{path}: invalid segment start={start}, stop={stop}")
    try:
        if os.path.getsize(path) == 0:
            raise AudioError(f"{path}: empty audio file (0 bytes)")
        header = sf.info(path)
    except AudioError:
        raise
    except Exception as err:
        raise AudioError(f"{path}: unreadable audio ({_one_line(err)})") from err
    native_rate, frames = int(header.samplerate), int(header.frames)
    if frames == 0:
        raise AudioError(f"{path}: empty audio file (no samples)")
    total = resampled_length(frames, native_rate, sample_rate)
    stop = total if stop is None else min(stop, total)
    if start >= stop:
        raise AudioError(
            f"{path}: empty segment: start={start} is past the end ({total} samples "
            f"at {sample_rate} Hz)"
        )
    if native_rate == sample_rate:
        return _read_mono(path, start, stop)
    return _read_resampled(path, start, stop, native_rate, sample_rate, frames)


def _read_mono(path, start, stop):
    """Native samples [start, stop) down-mixed to mono, checked for NaN/inf."""
    try:
        data, _ = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(
            f"{path}: corrupt audio, samples cannot be read ({_one_line(err)})"
        ) from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: corrupt audio, no samples where the header promises some")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))


def _read_resampled(path, start, stop, native_rate, target_rate, frames):
    """Resamples just enough native audio around [start, stop) and slices it."""
    g = math.gcd(native_rate, target_rate)
    step_in, step_out = native_rate // g, target_rate // g
    width = math.ceil(_LOWPASS_WIDTH * step_in / (_ROLLOFF * min(step_in, step_out)))
    context = -(-width // step_in) + 2
    first_block = max(0, start // step_out - context)
    last_block = -(-stop // step_out) + context
    native = _read_mono(path, first_block * step_in, min(frames, last_block * step_in))
    out = torchaudio.functional.resample(native, native_rate, target_rate)
    offset = first_block * step_out
    return out[start - offset : stop - offset].contiguous()
