"""FEFA's input attention in trained models (the paper's Fig. 2), measured, not drawn.

For each MODEL (a training run or a pretrained folder), FEFA's attention is read from the
model's own embedding pass over every file of a trial list (``collect_attention``), then:

- how far it moved from the identity (uniform attention is 1.0 per bin with the
  recipe's ``fefa_rescale``): the largest and the mean ``|a - 1|`` of the mean attention;
- its mean and spread per frequency band;
- whether it depends on the input: the spread of the attention over utterances, split
  into the part between speakers (spread of the per-speaker means) and the part within
  speakers, each against the spread of the mean attention around 1 (how much it
  equalizes). A fixed equalizer has no spread over utterances at all;
- whether models (seeds, backbones) learn the same equalizer: the correlation of their
  mean attention profiles, per bin and smoothed over 500 Hz (``profile_agreement``), and
  summed up by configuration: runs ``NAME``, ``NAME_s2``, ... are the seeds of one
  configuration (``group_agreement``, by :func:`protocol.split_seed`).

Example
-------
python benchmarks/bench_attention.py pretrained/fefa-ecapa128-speechcommands \\
    --trials benchmarks/results/runs/prepared/trials.txt \\
    --audio-root ../shared/data/speech_commands_v002_test
"""

import argparse
import os

import numpy as np

import protocol
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.evaluation.attention import collect_attention
from fefa_speechbrain.inference.embedder import SpeakerEmbedder
from fefa_speechbrain.inference.model_source import load_model

BANDS_HZ = ((0, 300), (300, 1000), (1000, 2000), (2000, 4000), (4000, 8001))


def speaker_of(path, audio_root):
    """The speaker folder of a ``<root>/<speaker>/<utt>`` path.

    Example
    -------
    >>> speaker_of("/data/sc/0a1b/yes_0.flac", "/data/sc")
    '0a1b'
    """
    return os.path.relpath(path, audio_root).split(os.sep)[0]


def attention_statistics(weights, speakers, sample_rate=16000):
    """Summary of per-utterance attention rows ``weights`` [n, bins] with speaker labels.

    Example
    -------
    >>> w = np.array([[1.0, 1.0], [1.2, 0.8], [1.2, 0.8], [1.0, 1.0]])
    >>> s = attention_statistics(w, ["a", "a", "b", "b"])
    >>> round(s["max_abs_deviation_of_mean"], 3), round(s["between_speaker_std"], 3)
    (0.1, 0.0)
    """
    weights = np.asarray(weights, dtype=float)
    mean = weights.mean(0)
    hz = np.linspace(0, sample_rate / 2, weights.shape[1])
    labels = sorted(set(speakers))
    index = np.array([labels.index(s) for s in speakers])
    speaker_means = np.stack([weights[index == i].mean(0) for i in range(len(labels))])
    within = weights - speaker_means[index]
    bands = []
    for low, high in BANDS_HZ:
        inside = (hz >= low) & (hz < high)
        bands.append({"band_hz": [low, min(high, sample_rate // 2)],
                      "mean": float(mean[inside].mean()),
                      "std_over_utterances": float(weights[:, inside].std(0).mean())})
    return {
        "utterances": int(weights.shape[0]),
        "speakers": len(labels),
        "max_abs_deviation_of_mean": float(np.abs(mean - 1).max()),
        "mean_abs_deviation_of_mean": float(np.abs(mean - 1).mean()),
        "max_hz": float(hz[mean.argmax()]), "max_weight": float(mean.max()),
        "min_hz": float(hz[mean.argmin()]), "min_weight": float(mean.min()),
        # root-mean-square over bins of each spread
        "equalizer_rms": float(np.sqrt(((mean - 1) ** 2).mean())),
        "over_utterances_std": float(np.sqrt(weights.var(0).mean())),
        "between_speaker_std": float(np.sqrt(speaker_means.var(0).mean())),
        "within_speaker_std": float(np.sqrt((within ** 2).mean(0).mean())),
        "bands": bands,
        "mean_per_bin": [round(float(v), 5) for v in mean],
    }


def profile_agreement(models, sample_rate=16000, smooth_hz=500.0):
    """Pearson correlation between models' equalizers (mean attention - 1 per bin).

    ``raw`` compares bin by bin; ``smoothed`` first averages each profile over a sliding
    ``smooth_hz`` window, so that it compares band shapes, not the bin-to-bin ripple.

    Example
    -------
    >>> up, down = [0.9, 1.0, 1.1, 1.2], [1.2, 1.1, 1.0, 0.9]
    >>> agreement = profile_agreement({"a": {"mean_per_bin": up}, "b": {"mean_per_bin": down}},
    ...                               sample_rate=6, smooth_hz=1)
    >>> agreement["names"], round(agreement["raw"][0][1], 3)
    (['a', 'b'], -1.0)
    """
    names = list(models)
    profiles = np.array([models[name]["mean_per_bin"] for name in names], dtype=float) - 1
    bins = profiles.shape[1]
    width = max(1, int(round(smooth_hz / (sample_rate / 2 / (bins - 1)))))
    smoothed = np.array([np.convolve(p, np.ones(width) / width, mode="valid") for p in profiles])
    return {"names": names, "smooth_hz": smooth_hz,
            "raw": np.corrcoef(profiles).round(4).tolist(),
            "smoothed": np.corrcoef(smoothed).round(4).tolist()}


def group_agreement(agreement, key="smoothed"):
    """Mean correlation within each configuration (its seeds) and between configurations.

    Returns ``{"groups": [names], "within": {group: [mean, min, max] or None for a single
    run}, "between": [[mean r]]}``, the diagonal of ``between`` being the within mean.

    Example
    -------
    >>> agreement = {"names": ["a", "a_s2", "b"],
    ...              "smoothed": [[1, 0.8, -0.5], [0.8, 1, -0.3], [-0.5, -0.3, 1]]}
    >>> summary = group_agreement(agreement)
    >>> summary["within"]["a"], summary["between"][0][1]
    ([0.8, 0.8, 0.8], -0.4)
    """
    r = np.asarray(agreement[key], dtype=float)
    groups = [protocol.split_seed(name)[0] for name in agreement["names"]]
    labels = list(dict.fromkeys(groups))
    members = {g: [i for i, group in enumerate(groups) if group == g] for g in labels}
    within, between = {}, []
    for g in labels:
        pairs = [r[i, j] for n, i in enumerate(members[g]) for j in members[g][n + 1:]]
        within[g] = ([round(float(np.mean(pairs)), 4), round(float(min(pairs)), 4),
                      round(float(max(pairs)), 4)] if pairs else None)
        row = []
        for h in labels:
            values = ([r[i, j] for i in members[g] for j in members[h]] if h != g else pairs)
            row.append(round(float(np.mean(values)), 4) if values else None)
        between.append(row)
    return {"key": key, "groups": labels, "within": within, "between": between}


def agreement_markdown(agreement):
    names = agreement["names"]
    summary = group_agreement(agreement)
    labels = summary["groups"]
    lines = ["", "Agreement by configuration (smoothed r; the diagonal: mean over the pairs of "
             "its seeds, with min - max; elsewhere: mean over all pairs of runs)", "",
             "| configuration | " + " | ".join(str(i + 1) for i in range(len(labels))) + " |",
             "|---|" + "---|" * len(labels)]
    for i, g in enumerate(labels):
        cells = []
        for j, value in enumerate(summary["between"][i]):
            if value is None:
                cells.append("-")
            elif i == j:
                low, high = summary["within"][g][1:]
                cells.append(f"**{value:+.2f}** ({low:+.2f} - {high:+.2f})")
            else:
                cells.append(f"{value:+.2f}")
        lines.append(f"| {i + 1} {g} | " + " | ".join(cells) + " |")
    for key, title in (("smoothed", f"smoothed over {agreement['smooth_hz']:.0f} Hz"),
                       ("raw", "bin by bin")):
        lines += ["", f"Agreement of the equalizers ({title}): Pearson r of mean - 1", "",
                  "| model | " + " | ".join(str(i + 1) for i in range(len(names))) + " |",
                  "|---|" + "---|" * len(names)]
        for i, name in enumerate(names):
            lines.append(f"| {i + 1} {name} | " + " | ".join(
                f"{value:+.2f}" for value in agreement[key][i]) + " |")
    return lines


def markdown(report):
    lines = [f"Command: `{report['command']}`",
             f"Machine: {report['machine']['cpu']}; {report['machine']['date']}", "",
             "| model | utterances / speakers | max / mean abs(mean - 1) | equalizer rms | "
             "spread over utterances | between speakers | within speakers | "
             "highest bin | lowest bin |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["models"].items():
        lines.append(
            f"| {name} | {s['utterances']} / {s['speakers']} | "
            f"{s['max_abs_deviation_of_mean']:.3f} / {s['mean_abs_deviation_of_mean']:.3f} | "
            f"{s['equalizer_rms']:.3f} | {s['over_utterances_std']:.3f} | "
            f"{s['between_speaker_std']:.3f} | {s['within_speaker_std']:.3f} | "
            f"{s['max_weight']:.2f} at {s['max_hz']:.0f} Hz | "
            f"{s['min_weight']:.2f} at {s['min_hz']:.0f} Hz |")
    lines += ["", "| model | " + " | ".join(f"{b['band_hz'][0]}-{b['band_hz'][1]} Hz"
                                            for b in next(iter(report["models"].values()))["bands"]) + " |",
              "|---|" + "---|" * len(BANDS_HZ)]
    for name, s in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{b['mean']:.3f} +- {b['std_over_utterances']:.3f}" for b in s["bands"]) + " |")
    if len(report["models"]) > 1:
        lines += agreement_markdown(report["agreement"])
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="training runs or pretrained folders")
    parser.add_argument("--trials", required=True, help="trial list whose files are used")
    parser.add_argument("--audio-root", required=True)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "attention"))
    args = parser.parse_args(argv)
    paths = trial_files(read_trials(args.trials, args.audio_root))
    report = {"command": protocol.command_line(), "machine": protocol.machine_info(),
              "trials": os.path.basename(args.trials), "models": {}}
    for model in args.models:
        loaded = load_model(model)
        weights = collect_attention(SpeakerEmbedder(loaded.modules), paths)
        names = sorted(weights)
        stats = attention_statistics([weights[n] for n in names],
                                     [speaker_of(n, args.audio_root) for n in names],
                                     loaded.sample_rate)
        report["models"][os.path.basename(os.path.normpath(model))] = stats
    report["agreement"] = profile_agreement(report["models"], loaded.sample_rate)
    report["agreement_by_configuration"] = group_agreement(report["agreement"])
    protocol.write_json(args.out + ".json", report)
    protocol.write_markdown(args.out + ".md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
