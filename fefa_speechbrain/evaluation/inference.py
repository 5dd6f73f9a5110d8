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
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as error:
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
        """wavs [batch, samples], relative lengths -> embeddings [batch, dim]."""
        wavs = wavs.to(self.device)
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=self.device)
        lengths = lengths.to(self.device)
        emb = embed_waveforms(self.modules, wavs, lengths)
        return emb.reshape(emb.shape[0], -1).float().cpu()

    def embed_files(self, paths, batch_size=16, sample_rate=16000, transform=None, progress=None):
        """Embeds every file once, in length-sorted batches.

        Every header is checked first (:func:`check_audio_files`): a list with bad files
        fails before any embedding, with one error listing them. Files are then read a
        batch at a time, so memory does not grow with the number of files.

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

        Returns
        -------
        dict : path -> embedding [dim]

        Raises
        ------
        AudioError
            Naming the files that are missing, unreadable, empty, too short (header
            check), or whose samples are corrupt or not finite (when read).
        RuntimeError
            Naming the files of a batch the model cannot embed (e.g. shorter than the
            model's minimum input length).
        """
        embeddings, total = {}, len(set(paths))
        for names, signals, wavs, wav_lengths in file_batches(paths, batch_size, sample_rate):
            if transform is not None:
                wavs = transform(wavs, wav_lengths)
            try:
                batch = self.embed(wavs, wav_lengths)
            except RuntimeError as error:
                shortest = min(sig.shape[0] for sig in signals)
                raise RuntimeError(
                    f"Cannot embed the batch of {len(names)} files {names} (shortest: "
                    f"{shortest} samples = {shortest / sample_rate:.3f} s; very short files "
                    f"can be below the model's minimum input length): "
                    f"{type(error).__name__}: {error}"
                ) from error
            embeddings.update(zip(names, batch))
            if progress is not None:
                progress(len(embeddings), total)
        return embeddings


def file_batches(paths, batch_size=16, sample_rate=16000):
    """The files' audio in length-sorted batches: (names, signals, wavs, relative lengths).

    Every header is checked first (:func:`check_audio_files`); a batch is read only when
    it is needed, so memory does not grow with the number of files.
    """
    lengths = check_audio_files(sorted(set(paths)), sample_rate=sample_rate)
    order = sorted(lengths, key=lengths.get)
    for first in range(0, len(order), batch_size):
        names = order[first : first + batch_size]
        signals = [load_audio(name, sample_rate=sample_rate) for name in names]
        yield (names, signals, *pad_signals(signals))


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
