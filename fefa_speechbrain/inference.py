"""Embeddings from a trained experiment folder, batched, once per file.

An experiment folder is what ``train_speaker_embeddings.py`` leaves behind:
``hyperparams.yaml`` (with the command-line overrides applied) and ``save/CKPT+*``
checkpoints. :func:`load_experiment` rebuilds the modules and loads the checkpoint with
the lowest validation error; :class:`SpeakerEmbedder` runs the same forward pass as
training (and as SpeechBrain's ``EncoderClassifier.encode_batch``, except that the
lengths given to the model are frame-exact, so padding never changes an embedding).
"""

import os

import torch

from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.features import feature_lengths
from fefa_speechbrain.recipe import load_hparams

EMBEDDING_KEYS = ("compute_features", "mean_var_norm", "embedding_model")


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
    hparams = load_hparams(find_hparams_file(experiment_folder), overrides)
    checkpointer = hparams["checkpointer"]
    checkpoint = checkpointer.recover_if_possible(min_key="ErrorRate")
    if checkpoint is None:
        raise FileNotFoundError(
            f"No complete checkpoint in {checkpointer.checkpoints_dir}: train first, or "
            "check that the training run saved at least one epoch"
        )
    for module in hparams["modules"].values():
        module.to(device).eval()
    return hparams, checkpoint


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
    >>> from fefa_speechbrain.features import Spectrogram, FrameNormalization
    >>> from fefa_speechbrain.wrapper import FEFAWrapper
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
        feats = self.modules["compute_features"](wavs)
        lengths = feature_lengths(self.modules["compute_features"], lengths, wavs.shape[1])
        feats = self.modules["mean_var_norm"](feats, lengths)
        emb = self.modules["embedding_model"](feats, lengths)
        return emb.reshape(emb.shape[0], -1).float().cpu()

    def embed_files(self, paths, batch_size=16, sample_rate=16000, transform=None):
        """Embeds every file once, in length-sorted batches.

        Arguments
        ---------
        paths : list of str
            Audio files (any format soundfile reads; resampled and down-mixed).
        batch_size : int
            Files per forward pass.
        transform : callable
            Optional ``transform(wavs, lengths) -> wavs`` applied before the features
            (e.g. noise for the robustness test).

        Returns
        -------
        dict : path -> embedding [dim]
        """
        unique = sorted(set(paths))
        signals = {path: load_audio(path, sample_rate=sample_rate) for path in unique}
        order = sorted(unique, key=lambda p: signals[p].shape[0])
        embeddings = {}
        for first in range(0, len(order), batch_size):
            names = order[first : first + batch_size]
            wavs, lengths = pad_signals([signals[n] for n in names])
            if transform is not None:
                wavs = transform(wavs, lengths)
            for name, emb in zip(names, self.embed(wavs, lengths)):
                embeddings[name] = emb
        return embeddings


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
