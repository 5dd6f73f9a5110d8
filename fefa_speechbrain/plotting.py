"""Figures of the paper: FEFA's attention over the spectrogram (Fig. 2) and EER vs SNR (Fig. 3).

Every figure is drawn on a :class:`matplotlib.figure.Figure` created directly (never
through ``pyplot``), so no GUI backend is touched and no global figure state is kept:
PNG files are rendered by Matplotlib's Agg canvas, also on a headless server. Each file
is written atomically (a temporary file in the destination's folder, then
:func:`os.replace`), so a reader never sees half a PNG. The pixel size of every PNG is
exactly ``figsize * dpi``.

Every plotting function returns the numbers it drew, so that tests (and users) can check
what a figure shows without reading pixels.

Frequency axis: bin ``k`` of an ``n_fft``-point FFT with ``n_bins = n_fft // 2 + 1``
one-sided bins lies at ``k * sample_rate / n_fft`` Hz (0 to 8,000 Hz for 257 bins at
16 kHz).
"""

import os

import numpy as np
import torch
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from fefa_speechbrain.atomic import atomic_open

ATTENTION_SIZE = (9.0, 4.5)
MEAN_ATTENTION_SIZE = (8.0, 4.0)
NOISE_CURVES_SIZE = (7.0, 4.5)
DPI = 100
KIND_STYLES = {"gaussian": ("-", "o"), "uniform": ("--", "s")}
DISPLAY_RANGE_DB = 80.0


def save_figure(fig, path):
    """Writes ``fig`` as a PNG to ``path`` atomically (missing folders are created).

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.png")
    >>> save_figure(Figure(figsize=(2, 1), dpi=50), path)
    >>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")


def bin_frequencies(n_bins, sample_rate=16000):
    """Centre frequency in Hz of each one-sided FFT bin.

    Example
    -------
    >>> bin_frequencies(257)[[0, 1, 256]].tolist()
    [0.0, 31.25, 8000.0]
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2 (one-sided FFT bins), got {n_bins}")
    return np.arange(n_bins) * sample_rate / (2.0 * (n_bins - 1))


def _as_array(values, name, ndim):
    """A float64 numpy array of ``ndim`` dimensions from a tensor or array-like."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _centred_norm(values, centre):
    """Colour scale with ``centre`` (uniform attention) in the middle of the colour map."""
    if values.min() < centre < values.max():
        return TwoSlopeNorm(vcenter=centre, vmin=values.min(), vmax=values.max())
    return Normalize(vmin=min(values.min(), centre - 1e-6), vmax=max(values.max(), centre + 1e-6))


def plot_attention_overlay(
    spectrogram,
    attention,
    path,
    title=None,
    sample_rate=16000,
    log_scale=True,
    hop_ms=10.0,
    figsize=ATTENTION_SIZE,
    dpi=DPI,
):
    """The paper's Fig. 2, right column: a spectrogram with FEFA's attention on top.

    Left panel: the spectrogram (time across, frequency in Hz up), in grey, with the
    attention weight of each frequency bin overlaid as a translucent colour band
    (warm = weighted up, cool = weighted down, white = the uniform level). Right panel:
    the same weights as a profile against frequency, with the level of uniform attention
    (the mean weight) dashed: bins to its right are amplified by FEFA, bins to its left
    attenuated.

    Arguments
    ---------
    spectrogram : array-like
        Magnitude spectrogram [time, bins] (tensor or array).
    attention : array-like
        FEFA's weight of each bin, [bins] (``FEFA.last_attention`` of the utterance).
    path : str
        Destination PNG.
    title : str
        Figure title.
    sample_rate : int
        Sampling rate of the audio, for the frequency axis.
    log_scale : bool
        Show ``20 log10(spectrogram)`` (dB; the grey scale spans the top 80 dB); False
        shows the values as given.
    hop_ms : float
        Frame hop, for the time axis.
    figsize : tuple
        Size in inches; the PNG has ``figsize * dpi`` pixels.
    dpi : int
        Pixels per inch.

    Returns
    -------
    dict
        What was drawn: ``image`` [bins, time] (dB if ``log_scale``), ``attention``
        [bins], ``frequencies_hz`` [bins], ``uniform_level`` (float).

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "overlay.png")
    >>> drawn = plot_attention_overlay(np.ones((50, 257)), np.linspace(0.5, 1.5, 257), path)
    >>> drawn["image"].shape, float(drawn["frequencies_hz"][-1]), drawn["uniform_level"]
    ((257, 50), 8000.0, 1.0)
    """
    spec = _as_array(spectrogram, "spectrogram", 2)
    weights = _as_array(attention, "attention", 1)
    if spec.shape[1] != weights.shape[0]:
        raise ValueError(
            f"spectrogram has {spec.shape[1]} frequency bins but attention has "
            f"{weights.shape[0]} (expected spectrogram [time, bins] and attention [bins])"
        )
    image = 20.0 * np.log10(np.abs(spec) + 1e-8) if log_scale else spec
    image = image.T
    freqs = bin_frequencies(weights.shape[0], sample_rate)
    uniform = float(weights.mean())
    duration = spec.shape[0] * hop_ms / 1000.0
    extent = (0.0, duration, freqs[0], freqs[-1])

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=(4, 1))
    ax_spec = fig.add_subplot(grid[0, 0])
    ax_prof = fig.add_subplot(grid[0, 1], sharey=ax_spec)
    floor = image.max() - DISPLAY_RANGE_DB if log_scale else None
    ax_spec.imshow(image, origin="lower", aspect="auto", cmap="gray", extent=extent, vmin=floor)
    band = np.repeat(weights[:, None], 2, axis=1)
    overlay = ax_spec.imshow(
        band,
        origin="lower",
        aspect="auto",
        cmap="coolwarm",
        norm=_centred_norm(weights, uniform),
        alpha=0.45,
        extent=extent,
    )
    ax_spec.set_xlabel("time (s)")
    ax_spec.set_ylabel("frequency (Hz)")
    fig.colorbar(overlay, ax=ax_spec, label="FEFA weight", pad=0.01)

    ax_prof.plot(weights, freqs, color="tab:red")
    ax_prof.axvline(uniform, color="black", linestyle="--", linewidth=0.8, label="uniform")
    ax_prof.set_xlabel("FEFA weight")
    ax_prof.tick_params(labelleft=False)
    ax_prof.legend(loc="upper right", fontsize="small")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return {
        "image": image,
        "attention": weights,
        "frequencies_hz": freqs,
        "uniform_level": uniform,
    }


def plot_mean_attention(
    attentions, path, sample_rate=16000, title=None, figsize=MEAN_ATTENTION_SIZE, dpi=DPI
):
    """Mean and spread (one standard deviation) of FEFA's weight per bin over many files.

    Arguments
    ---------
    attentions : array-like or dict
        [N, bins] weights of N utterances, or a dict name -> [N, bins] for one curve per
        model (all with the same number of bins).
    path : str
        Destination PNG.
    sample_rate : int
        For the frequency axis (Hz).
    title : str
        Figure title (default: "FEFA attention per frequency bin").
    figsize, dpi
        Size of the PNG: ``figsize * dpi`` pixels.

    Returns
    -------
    dict
        name -> {"mean": [bins], "std": [bins], "n_files": N}, plus ``frequencies_hz``
        [bins] under the key "frequencies_hz". A bare array is named "FEFA".

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "mean.png")
    >>> drawn = plot_mean_attention(np.array([[0.5, 1.5, 1.0], [1.5, 0.5, 1.0]]), path)
    >>> drawn["FEFA"]["mean"].tolist(), drawn["FEFA"]["std"].tolist()
    ([1.0, 1.0, 1.0], [0.5, 0.5, 0.0])
    >>> drawn["frequencies_hz"].tolist()
    [0.0, 4000.0, 8000.0]
    """
    curves = attentions if isinstance(attentions, dict) else {"FEFA": attentions}
    if not curves:
        raise ValueError("attentions is an empty dict: nothing to plot")
    arrays = {
        name: _as_array(values, f"attentions[{name!r}]", 2) for name, values in curves.items()
    }
    n_bins = {array.shape[1] for array in arrays.values()}
    if len(n_bins) != 1:
        raise ValueError(f"attentions have different numbers of bins: {sorted(n_bins)}")
    freqs = bin_frequencies(n_bins.pop(), sample_rate)

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    drawn = {"frequencies_hz": freqs}
    for name, array in arrays.items():
        if array.shape[0] == 0:
            raise ValueError(f"attentions[{name!r}] holds no utterance")
        mean, std = array.mean(axis=0), array.std(axis=0)
        line = ax.plot(freqs, mean, label=f"{name} (mean of {array.shape[0]})")[0]
        ax.fill_between(freqs, mean - std, mean + std, color=line.get_color(), alpha=0.25)
        drawn[name] = {"mean": mean, "std": std, "n_files": array.shape[0]}
    level = float(np.mean([drawn[name]["mean"].mean() for name in arrays]))
    ax.axhline(level, color="black", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("FEFA weight (mean ± 1 std)")
    ax.set_xlim(freqs[0], freqs[-1])
    ax.set_title(title or "FEFA attention per frequency bin")
    ax.legend(fontsize="small")
    save_figure(fig, path)
    return drawn


def plot_noise_curves(
    curves, levels, path, metric="eer", title=None, figsize=NOISE_CURVES_SIZE, dpi=DPI
):
    """The paper's Fig. 3: EER (in %) against SNR, one line per model and noise kind.

    The x axis is categorical, from clean (left) to the lowest SNR (right), one tick per
    level present in the rows (e.g. clean, 100, 50, 20, 10, 5, 0 dB). Each model has a
    colour; Gaussian noise is drawn solid with circles, uniform noise dashed with squares.

    Arguments
    ---------
    curves : dict
        (model, kind) -> (SNR labels, values), from
        :func:`fefa_speechbrain.evaluation.robustness.noise_curves`.
    levels : list of str
        The SNR labels of the x axis, clean first
        (:func:`fefa_speechbrain.evaluation.robustness.snr_order`).
    path : str
        Destination PNG.
    metric : str
        The row key to plot ("eer" in %, or a minDCF key, plotted as is).
    title : str
        Figure title.
    figsize, dpi
        Size of the PNG: ``figsize * dpi`` pixels.

    Returns
    -------
    dict
        (model, kind) -> (SNR labels, plotted values), values in % for the EER.

    Example
    -------
    >>> import os, tempfile
    >>> curves = {("fefa", "gaussian"): (["clean", "20"], [0.05, 0.08])}
    >>> plot_noise_curves(curves, ["clean", "20"], os.path.join(tempfile.mkdtemp(), "fig3.png"))
    {('fefa', 'gaussian'): (['clean', '20'], [5.0, 8.0])}
    """
    if not curves:
        raise ValueError("rows hold no noisy condition (only clean rows, or none): no curve")
    scale = 100.0 if metric == "eer" else 1.0
    position = {label: index for index, label in enumerate(levels)}
    models = list(dict.fromkeys(model for model, _ in curves))
    colours = {model: f"C{index % 10}" for index, model in enumerate(models)}

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    drawn = {}
    for (model, kind), (labels, values) in curves.items():
        values = [value * scale for value in values]
        ax.plot(
            [position[label] for label in labels],
            values,
            color=colours[model],
            linestyle=KIND_STYLES.get(kind, (":", "^"))[0],
            marker=KIND_STYLES.get(kind, (":", "^"))[1],
            label=f"{model}, {kind}",
        )
        drawn[(model, kind)] = (labels, values)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels(levels)
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("EER (%)" if metric == "eer" else metric)
    ax.set_title(title or "Robustness to synthetic noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, path)
    return drawn


DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def plot_det(curves, path, title="DET curve", figsize=(5, 5), dpi=DPI):
    """Detection error trade-off curves on normal-deviate axes, as a PNG.

    Arguments
    ---------
    curves : dict
        name -> (false-acceptance rates, false-rejection rates), e.g. from
        :func:`fefa_speechbrain.evaluation.metrics.det_curve`.
    path : str
        Output PNG (written atomically).

    Returns
    -------
    dict : name -> (x, y) probit coordinates that were drawn.

    Example
    -------
    >>> import os, tempfile
    >>> from fefa_speechbrain.evaluation.metrics import det_curve
    >>> fpr, fnr, _ = det_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    >>> drawn = plot_det({"m": (fpr, fnr)}, os.path.join(tempfile.mkdtemp(), "det.png"))
    >>> len(drawn["m"][0]) == len(fpr)
    True
    """
    from scipy.stats import norm

    clip = 1e-4
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    drawn = {}
    for name, (fpr, fnr) in curves.items():
        x = norm.ppf(np.clip(np.asarray(fpr, dtype=float), clip, 1 - clip))
        y = norm.ppf(np.clip(np.asarray(fnr, dtype=float), clip, 1 - clip))
        ax.plot(x, y, label=name)
        drawn[name] = (x, y)
    ticks = norm.ppf(DET_TICKS)
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.plot([ticks[0], ticks[-1]], [ticks[0], ticks[-1]], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title(title)
    ax.grid(True, lw=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    save_figure(fig, path)
    return drawn
