"""FEFA's attention in a trained model (the paper's Fig. 2): collected, then drawn.

The weights are read from the model's own embedding pass (``input_fefa.last_attention``),
so they are exactly those the embeddings were computed with; :mod:`fefa_speechbrain.plotting`
draws them. Also the file lists the attention is averaged over (a trial list or a CSV).
"""

import csv
import os

import numpy as np
import torch

from fefa_speechbrain import plotting
from fefa_speechbrain.atomic import atomic_open
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, file_batches
from fefa_speechbrain.inference.model_source import load_model
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.lobes.features import Spectrogram


def collect_attention(embedder, paths, batch_size=16, sample_rate=16000):
    """FEFA's input attention for each file, from the model's own embedding pass.

    Runs :meth:`SpeakerEmbedder.embed` (the very forward pass that makes the
    embeddings) in length-sorted batches and reads ``input_fefa.last_attention``, so
    the weights are exactly those the embeddings were computed with.

    Arguments
    ---------
    embedder : SpeakerEmbedder
        The model; its embedding_model needs an ``input_fefa`` (ThinResNet34, VGG-M,
        FEFAWrapper, ... with fefa "single" or "multi").
    paths : list of str
        Audio files.
    batch_size : int
        Files per forward pass.
    sample_rate : int
        Rate the audio is loaded at.

    Returns
    -------
    dict : path -> attention weights, numpy [bins]
    """
    fefa = getattr(embedder.modules["embedding_model"], "input_fefa", None)
    if fefa is None:
        raise ValueError(
            "the embedding model has no input FEFA (trained with fefa=none?): there is no "
            "attention to plot"
        )
    weights = {}
    for names, signals in file_batches(paths, batch_size, sample_rate):
        embedder.embed(torch.stack(signals))  # one length per batch: one forward pass
        for name, row in zip(names, fefa.last_attention.float().cpu().numpy()):
            weights[name] = row
    return weights


def spectrogram_of(path, n_bins, sample_rate=16000):
    """Magnitude spectrogram [time, n_bins] of a file, for display (25 ms, 10 ms hop).

    Example
    -------
    >>> import os, tempfile, soundfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> soundfile.write(path, np.sin(np.arange(8000) * 0.3), 16000)
    >>> spectrogram_of(path, 257).shape
    (51, 257)
    """
    spectrogram = Spectrogram(sample_rate=sample_rate, n_fft=2 * (n_bins - 1))
    wav = load_audio(path, sample_rate=sample_rate)
    return spectrogram(wav.unsqueeze(0))[0].numpy()


def overlay_names(paths):
    """Short unique names for files: the path below their common folder, without extension.

    Folder separators become "_" (VoxCeleb's ``id10270/5r0dWxy17C8/00001.wav`` ->
    ``id10270_5r0dWxy17C8_00001``); the extension is kept (``a_wav``) only where
    dropping it would make two names equal.

    Example
    -------
    >>> overlay_names(["/d/id1/v/00001.wav", "/d/id2/v/00001.wav"])
    ['id1_v_00001', 'id2_v_00001']
    >>> overlay_names(["/d/a.wav", "/d/a.flac"]), overlay_names(["/d/x/b.wav"])
    (['a_wav', 'a_flac'], ['b'])
    """
    paths = [os.path.abspath(path) for path in paths]
    if len(set(paths)) != len(paths):
        raise ValueError("overlay_names: the same file is listed twice")
    if len(paths) == 1:
        root = os.path.dirname(paths[0])
    else:
        root = os.path.commonpath(paths)
    relative = [os.path.relpath(path, root).replace(os.sep, "_") for path in paths]
    stems = [os.path.splitext(name)[0] for name in relative]
    if len(set(stems)) == len(stems):
        return stems
    return [name.replace(".", "_") for name in relative]


def attention_figures(
    experiment_folder, overlay_files, output_folder, mean_files=None, batch_size=16, device="cpu"
):
    """Fig. 2 for a trained experiment: overlays for a few files and the mean attention.

    Writes ``attention_<name>.png`` (see :func:`overlay_names`) for every overlay file,
    ``attention_mean.png`` (mean and spread per bin over ``mean_files``) and
    ``attention_mean.npy`` (the mean weight per bin, float64 [bins]) in
    ``output_folder``.

    Arguments
    ---------
    experiment_folder : str
        A MODEL with an input FEFA: the output folder of ``train_speaker_embeddings.py``,
        a pretrained folder or a hub id.
    overlay_files : list of str
        Files to draw one overlay each for.
    output_folder : str
        Where the figures go (created if missing).
    mean_files : list of str
        Files to average the attention over; None averages over ``overlay_files``.
    batch_size : int
        Files per forward pass.
    device : str
        Where the model runs.

    Returns
    -------
    dict
        ``overlays`` (file -> PNG path), ``mean_plot``, ``mean_array``, ``n_mean_files``,
        ``checkpoint``.
    """
    mean_files = list(overlay_files) if mean_files is None else list(mean_files)
    if not overlay_files and not mean_files:
        raise ValueError("attention_figures: give at least one file (overlay_files or mean_files)")
    wanted = list(dict.fromkeys(list(overlay_files) + mean_files))
    missing = [path for path in wanted if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} audio file(s) not found, the first: {missing[0]}"
        )
    model = load_model(experiment_folder, device=device)
    sample_rate = model.sample_rate
    embedder = SpeakerEmbedder(model.modules, device=device)
    weights = collect_attention(embedder, wanted, batch_size, sample_rate)
    outputs = {"overlays": {}, "checkpoint": model.checkpoint}
    for path, name in zip(overlay_files, overlay_names(overlay_files)):
        png = os.path.join(output_folder, f"attention_{name}.png")
        spectrogram = spectrogram_of(path, weights[path].shape[0], sample_rate)
        plotting.plot_attention_overlay(
            spectrogram, weights[path], png, title=name, sample_rate=sample_rate
        )
        outputs["overlays"][path] = png
    if mean_files:
        stacked = np.stack([weights[path] for path in mean_files])
        outputs["mean_plot"] = os.path.join(output_folder, "attention_mean.png")
        outputs["mean_array"] = os.path.join(output_folder, "attention_mean.npy")
        drawn = plotting.plot_mean_attention(stacked, outputs["mean_plot"], sample_rate=sample_rate)
        with atomic_open(outputs["mean_array"], "wb") as handle:
            np.save(handle, drawn["FEFA"]["mean"])
        outputs["n_mean_files"] = len(mean_files)
    return outputs


def list_audio_files(path, audio_root=None):
    """The audio files named by a SpeechBrain CSV (``wav`` column) or a trial list.

    A ``.csv`` file is read as a SpeechBrain annotation (relative ``wav`` entries are
    taken relative to ``audio_root``, default the CSV's folder); anything else as a trial
    list ``label enrol test`` (:func:`fefa_speechbrain.evaluation.verification.read_trials`).
    Returns the distinct files, sorted.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> csv_path = os.path.join(folder, "dev.csv")
    >>> rows = "ID,wav,spk_id\\na,/x/1.wav,s\\nb,/x/0.wav,s\\nc,/x/1.wav,s\\n"
    >>> _ = open(csv_path, "w").write(rows)
    >>> list_audio_files(csv_path)
    ['/x/0.wav', '/x/1.wav']
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File list {path} does not exist")
    if not path.lower().endswith(".csv"):
        return trial_files(read_trials(path, audio_root))
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        if reader.fieldnames is None or "wav" not in reader.fieldnames:
            raise ValueError(f"{path} has no wav column (columns: {reader.fieldnames})")
        files = {os.path.join(root, row["wav"]) for row in reader}
    if not files:
        raise ValueError(f"{path} lists no file")
    return sorted(files)


def evenly_spaced(items, count):
    """At most ``count`` items, spread evenly over the list (first and last included).

    Example
    -------
    >>> evenly_spaced(list("abcdefghij"), 4), evenly_spaced(["a", "b"], 5)
    (['a', 'd', 'g', 'j'], ['a', 'b'])
    """
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return [items[int(i)] for i in np.round(np.linspace(0, len(items) - 1, count))]
