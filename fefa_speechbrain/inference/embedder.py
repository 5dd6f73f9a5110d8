"""Embeddings from a trained experiment folder, batched, once per file.

An experiment folder is what ``train_speaker_embeddings.py`` leaves behind:
``hyperparams.yaml`` (with the command-line overrides applied) and ``save/CKPT+*``
checkpoints. :func:`load_experiment` rebuilds the modules and loads the checkpoint with
the lowest validation error; :class:`SpeakerEmbedder` runs the same forward pass as
training (and as SpeechBrain's ``EncoderClassifier.encode_batch``, except that the
lengths given to the model are frame-exact, so padding never changes an embedding).

Bad audio: :meth:`SpeakerEmbedder.embed_files` reads the header of every file before it
computes anything (:func:`check_audio_files`), so a list with missing, unreadable, empty,
m4a or too-short files fails at once with one error listing them. Stereo files are
down-mixed and other sample rates resampled when read; corrupt samples and NaN/inf
values raise an :class:`~fefa_speechbrain.data.audio.AudioError` naming the file.
"""

import logging
import os
import pickle

import torch

from fefa_speechbrain.checkpoints import PretrainedFolderError, load_checked_state_dict
from fefa_speechbrain.data.audio import (
    MIN_SAMPLES,
    AudioError,
    inspect_audio,
    load_audio,
    resampled_length,
)
from fefa_speechbrain.lobes.features import embed_waveforms
from fefa_speechbrain.hparams import load_hparams

EMBEDDING_KEYS = ("compute_features", "mean_var_norm", "embedding_model")
CHECKPOINT_MODULES = ("embedding_model", "classifier")
MAX_LISTED_FILES = 10
logger = logging.getLogger(__name__)
MAX_BATCH_SAMPLES = 16 * 10 * 16000  # samples per forward pass: 16 files of 10 s
LONG_SECONDS = 30.0  # longer files are recordings: speech only, in windows
WINDOW_SECONDS = 30.0  # the longest window of a recording embedded at once


def find_hparams_file(experiment_folder):
    """Path of the experiment's saved hyperparams.yaml, with a clear error if missing."""
    path = os.path.join(experiment_folder, "hyperparams.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{experiment_folder} is not a training output folder: {path} is missing "
            "(pass the output_folder of train_speaker_embeddings.py)"
        )
    return path


def load_experiment(experiment_folder, device="cpu", overrides=None):
    """Loads hparams and the best checkpoint (lowest ErrorRate) of a training run.

    Returns
    -------
    (hparams, checkpoint) : the hparams dict (modules in eval mode, on ``device``) and
    the SpeechBrain Checkpoint that was loaded.
    """
    hparams_file = find_hparams_file(experiment_folder)
    hparams = load_hparams(hparams_file, overrides)
    checkpointer = hparams["checkpointer"]
    try:
        checkpoint = checkpointer.recover_if_possible(min_key="ErrorRate")
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, IndexError, ValueError) as error:
        raise _checkpoint_error(checkpointer, hparams, hparams_file, error) from error
    if checkpoint is None:
        raise FileNotFoundError(
            f"No complete checkpoint in {checkpointer.checkpoints_dir}: train first, or "
            "check that the training run saved at least one epoch"
        )
    for module in hparams["modules"].values():
        module.to(device).eval()
    return hparams, checkpoint


def _checkpoint_error(checkpointer, hparams, hparams_file, error):
    """The error for a checkpoint that cannot be loaded, naming the file at fault.

    Missing files are named; for the module files, raises the precise error of the first
    one that is unreadable or does not fit the modules ``hparams_file`` builds;
    otherwise returns a generic error naming the checkpoint folder.
    """
    checkpoint = checkpointer.find_checkpoint(min_key="ErrorRate")
    if checkpoint is not None:
        held = checkpoint.paramfiles
        missing = [f"{key}.ckpt" for key in checkpointer.recoverables if key not in held]
        if missing:
            return FileNotFoundError(
                f"Checkpoint {checkpoint.path} lacks {', '.join(missing)} (it holds "
                f"{sorted(path.name for path in held.values())}): it was "
                "copied or edited incompletely"
            )
    modules = hparams.get("modules", {})
    for key in CHECKPOINT_MODULES:
        if checkpoint is not None and key in checkpoint.paramfiles and key in modules:
            load_checked_state_dict(modules[key], checkpoint.paramfiles[key])
    where = checkpoint.path if checkpoint is not None else checkpointer.checkpoints_dir
    return PretrainedFolderError(
        f"Checkpoint {where} cannot be loaded into the modules of {hparams_file}: "
        f"{type(error).__name__}: {' '.join(str(error).split())}"
    )


def check_audio_files(paths, sample_rate=16000, min_samples=MIN_SAMPLES):
    """Reads the header of every file; one error lists the files that cannot be embedded.

    Meant to run before any embedding is computed, so that a bad file deep in a long
    list stops the run at once instead of after hours. Catches what headers reveal:
    missing, unreadable, empty or m4a files, and files shorter than ``min_samples``
    (one 25 ms frame) at ``sample_rate``. Corrupt samples and NaN/inf values only show
    when a file is read: :func:`load_audio` then raises an error naming the file.

    Arguments
    ---------
    paths : list of str
        The audio files.
    sample_rate : int
        The rate the model works at (other rates are resampled when read).
    min_samples : int
        Shortest usable length, in samples at ``sample_rate``.

    Returns
    -------
    dict : path -> number of samples at ``sample_rate``, in the order of ``paths``.

    Raises
    ------
    AudioError
        Listing the first bad files with the reason for each, and how many there are.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(f"{tmp}/a.wav", np.full(8000, 0.1), 8000)
    >>> check_audio_files([f"{tmp}/a.wav"])
    {'.../a.wav': 16000}
    >>> sf.write(f"{tmp}/b.wav", np.full(100, 0.1), 16000)
    >>> check_audio_files([f"{tmp}/a.wav", f"{tmp}/b.wav", f"{tmp}/c.wav"])
    Traceback (most recent call last):
    ...
    fefa_speechbrain.data.audio.AudioError: 2 of 3 audio files cannot be used ...
      .../b.wav: too short: 100 samples at 16000 Hz < 400 (one 25 ms frame)
      .../c.wav: missing (no such file)
    """
    lengths, problems = {}, []
    for path in paths:
        if not os.path.isfile(path):
            problems.append(f"{path}: missing (no such file)")
            continue
        info = inspect_audio(path, min_samples=min_samples, full=False, sample_rate=sample_rate)
        if info.ok:
            lengths[path] = resampled_length(info.frames, info.sample_rate, sample_rate)
            if info.warnings:  # e.g. a truncated WAV: embedded with the samples it holds
                logger.warning("%s: %s", path, "; ".join(info.warnings))
        else:
            reason = "; ".join(info.reasons)
            problems.append(reason if reason.startswith(f"{path}: ") else f"{path}: {reason}")
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED_FILES])
        more = len(problems) - MAX_LISTED_FILES
        raise AudioError(
            f"{len(problems)} of {len(paths)} audio files cannot be used (nothing was "
            f"embedded; remove or fix them, see docs/troubleshooting.md):\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return lengths


class SpeakerEmbedder:
    """Waveforms -> L2-comparable embeddings with the recipe's modules.

    Arguments
    ---------
    modules : dict
        compute_features, mean_var_norm, embedding_model (as in the recipe's hparams).
    device : str
        Where the modules live.

    Example
    -------
    >>> from fefa_speechbrain.lobes.features import Spectrogram, FrameNormalization
    >>> from fefa_speechbrain.lobes.wrapper import FEFAWrapper
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> ecapa = ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8, lin_neurons=8)
    >>> modules = {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
    ...            "embedding_model": FEFAWrapper(ecapa, 257).eval()}
    >>> SpeakerEmbedder(modules).embed(torch.randn(2, 16000)).shape
    torch.Size([2, 8])
    """

    def __init__(self, modules, device="cpu"):
        missing = [key for key in EMBEDDING_KEYS if key not in modules]
        if missing:
            raise KeyError(f"modules lack {missing} (need {list(EMBEDDING_KEYS)})")
        self.modules = modules
        self.device = device

    @torch.no_grad()
    def embed(self, wavs, lengths=None):
        """wavs [batch, samples], relative lengths -> embeddings [batch, dim].

        Rows of different lengths are run in groups of equal length without padding, so
        a waveform gets the same embedding alone or in any batch, whatever the backbone
        (ECAPA-TDNN's convolutions see the padding otherwise).
        """
        wavs = wavs.to(self.device)
        if lengths is None:
            lengths = torch.ones(wavs.shape[0])
        valid = torch.round(torch.as_tensor(lengths).double().cpu() * wavs.shape[1]).long()
        out = None
        for length in torch.unique(valid).tolist():
            rows = torch.nonzero(valid == length).flatten()
            group = wavs[rows.to(wavs.device), :length]
            ones = torch.ones(group.shape[0], device=self.device)
            emb = embed_waveforms(self.modules, group, ones)
            emb = emb.reshape(emb.shape[0], -1).float().cpu()
            if out is None:
                out = torch.empty(wavs.shape[0], emb.shape[1])
            out[rows] = emb
        return out

    def embed_recording(self, signal, sample_rate=16000):
        """One embedding of a long recording in bounded memory: its speech only (voice
        activity), in windows of at most ``WINDOW_SECONDS``, the length-weighted mean of
        the windows' unit-length embeddings. None when it holds no speech."""
        from fefa_speechbrain.inference.vad import speech_only, speech_regions

        speech = speech_only(signal, speech_regions(signal, sample_rate))
        if speech.numel() < MIN_SAMPLES:
            return None
        window = int(WINDOW_SECONDS * sample_rate)
        count = -(-speech.numel() // window)
        total = torch.zeros(())
        for piece in torch.tensor_split(speech, count):
            emb = self.embed(piece[None])[0]
            total = total + piece.numel() * emb / emb.norm().clamp(min=1e-12)
        return total / speech.numel()

    def embed_files(self, paths, batch_size=16, sample_rate=16000, transform=None, progress=None,
                    check_speech=False):
        """Embeds every file once, in batches of files of equal length.

        Every header is checked first (:func:`check_audio_files`): a list with bad files
        fails before any embedding, with one error listing them. Files are then read a
        batch at a time, so memory does not grow with the number of files. A batch holds
        files of one length only (at most ``batch_size`` files and ``MAX_BATCH_SAMPLES``
        samples), so an embedding does not depend on the other files. Files longer than
        ``LONG_SECONDS`` are recordings: their speech only is embedded, in bounded memory
        (:meth:`embed_recording`).

        Arguments
        ---------
        paths : list of str
            Audio files (any format soundfile reads; resampled and down-mixed).
        batch_size : int
            Files per forward pass.
        sample_rate : int
            The rate the model works at.
        transform : callable
            Optional ``transform(wavs, lengths) -> wavs`` applied before the features
            (e.g. noise for the robustness test).
        progress : callable
            Optional ``progress(files_done, files_total)``, called after every batch.
        check_speech : bool
            Run voice activity on every clip (about 20 ms per 1 s clip): those without
            speech (silence, noise only) are listed in the result's ``no_speech``. Off for
            the evaluation paths, where nothing reads the list; the command line turns it
            on. Recordings over ``LONG_SECONDS`` always use voice activity.

        Returns
        -------
        Embeddings : dict path -> embedding [dim], with ``no_speech``: the sorted paths
        in which no speech was found (a recording without speech gets no embedding).

        Raises
        ------
        AudioError
            Naming the files that are missing, unreadable, empty, too short (header
            check), or whose samples are corrupt or not finite (when read).
        RuntimeError
            Naming the files of a batch the model cannot embed (e.g. shorter than the
            model's minimum input length).
        """
        from fefa_speechbrain.inference.vad import has_speech

        embeddings, total, done = Embeddings(), len(set(paths)), 0
        for names, signals in file_batches(paths, batch_size, sample_rate):
            done += len(names)
            if len(names) == 1 and signals[0].numel() > LONG_SECONDS * sample_rate and transform is None:
                emb = self.embed_recording(signals[0], sample_rate)
                if emb is None:
                    embeddings.no_speech.append(names[0])
                else:
                    embeddings[names[0]] = emb
            else:
                if check_speech:
                    embeddings.no_speech.extend(
                        name for name, sig in zip(names, signals) if not has_speech(sig))
                wavs = torch.stack(signals)
                if transform is not None:
                    wavs = transform(wavs, torch.ones(len(names)))
                try:
                    batch = self.embed(wavs)
                except RuntimeError as error:
                    shortest = signals[0].shape[0]
                    raise RuntimeError(
                        f"Cannot embed the batch of {len(names)} files {names} (length: "
                        f"{shortest} samples = {shortest / sample_rate:.3f} s; very short files "
                        f"can be below the model's minimum input length): "
                        f"{type(error).__name__}: {error}"
                    ) from error
                embeddings.update(zip(names, batch))
            if progress is not None:
                progress(done, total)
        embeddings.no_speech.sort()
        return embeddings


class Embeddings(dict):
    """path -> embedding, and ``no_speech``: the files in which no speech was found."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.no_speech = []


def file_batches(paths, batch_size=16, sample_rate=16000, max_samples=None):
    """The files' audio in batches of one length: (names, signals).

    Every header is checked first (:func:`check_audio_files`); files are read in
    length order, a few at a time, so memory does not grow with the number of files; a
    batch holds at most ``batch_size`` files of exactly one length and at most
    ``max_samples`` samples (``MAX_BATCH_SAMPLES``), or one longer file.
    """
    max_samples = MAX_BATCH_SAMPLES if max_samples is None else max_samples
    lengths = check_audio_files(sorted(set(paths)), sample_rate=sample_rate)
    order = sorted(lengths, key=lambda name: (lengths[name], name))
    names, signals = [], []
    for name in order:
        signal = load_audio(name, sample_rate=sample_rate)
        if names and (signal.shape[0] != signals[0].shape[0] or len(names) >= batch_size
                      or (len(names) + 1) * signal.shape[0] > max_samples):
            yield names, signals
            names, signals = [], []
        names.append(name)
        signals.append(signal)
    if names:
        yield names, signals


def pad_signals(signals):
    """Zero-pads 1-D signals into [batch, max_len] with relative lengths.

    Example
    -------
    >>> wavs, lens = pad_signals([torch.ones(4), torch.ones(2)])
    >>> wavs.tolist(), lens.tolist()
    ([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]], [1.0, 0.5])
    """
    longest = max(sig.shape[0] for sig in signals)
    wavs = torch.zeros(len(signals), longest)
    for row, sig in enumerate(signals):
        wavs[row, : sig.shape[0]] = sig
    lengths = torch.tensor([sig.shape[0] / longest for sig in signals])
    return wavs, lengths
