"""Verification quality of the recipe on real speech (Speech Commands v0.02, test split).

Runs the recipe's own scripts as a user would, one subprocess each:

1. the generic-corpus preparation (``python -m fefa_speechbrain.data.prepare folder``,
   the function the recipe calls for ``--corpus=folder``) with the fixed protocol of
   the corpus' README: the test speakers are written by :mod:`protocol` (first hex digit
   0-3, at least 5 clips), every speaker outside that range with at least 2 clips
   trains (184), and the preparation generates the trials: every target pair of the test clips plus as many
   seeded random non-target pairs;
2. for every configuration and seed, ``train_speaker_embeddings.py`` then
   ``speaker_verification.py`` (cosine scoring, EER and minDCF);
3. ``noise_robustness.py`` on thin-ResNet34 + TAP with and without FEFA (first seed);
4. ``plot_attention.py``: FEFA's mean attention per frequency bin (thin-ResNet34 + TAP,
   FEFA(S), first seed) over every trial file.

It writes ``<out>.json`` and ``<out>.md`` (tables: mean and sample standard deviation
over seeds), ``<out>_noise_robustness.png`` and ``<out>_attention_mean.png``. Experiment
folders go to ``<runs-dir>/<full|quick>/<config>/<seed>`` (not committed); a run whose
commands are unchanged and whose results exist is reused, anything else is redone.

Same budget for every row (CPU): ``--epochs`` epochs over the training clips, whole 1 s
clips (``--sentence-len 1.0``), batch ``--batch-size``, Adam from ``--lr`` annealed
linearly to ``--lr-final``, softmax loss, no augmentation; the CNNs at channel width
``--width`` and ECAPA-TDNN at ``--ecapa-channels`` channels. ``--jobs`` trainings run
at once, each with ``cpu_count // jobs`` threads.

Examples
--------
python benchmarks/bench_quality.py --quick          # checks: 3 short runs, ~10 minutes
python benchmarks/bench_quality.py --list           # the plan and the commands
python benchmarks/bench_quality.py                  # everything (budget: 90 minutes)
python benchmarks/bench_quality.py --only tr34_tap_none tr34_tap_single --seeds 1
"""

import argparse
import concurrent.futures
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import protocol
from fefa_speechbrain.atomic import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "VoxCeleb", "FEFA")
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data",
                                             "speech_commands_v002_test"))
PREP_SEED = 1986  # the recipe's default seed: fixes the train/dev split and the trials
FRAME_NORM_LINE = "mean_var_norm: !new:fefa_speechbrain.lobes.features.FrameNormalization"
SENTENCE_NORM = (
    "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\n"
    "    norm_type: sentence"
)
NOISE_MODELS = ("tr34_tap_single", "tr34_tap_none")
ATTENTION_MODEL = "tr34_tap_single"
ABLATION_BASELINE = "tr34_tap_single"
BANDS_HZ = ((0, 300), (300, 1000), (1000, 2000), (2000, 4000), (4000, 8001))


@dataclass(frozen=True)
class Config:
    """One row of the benchmark: a recipe yaml, a FEFA placement and overrides."""

    name: str
    yaml: str
    backbone: str
    aggregation: str
    fefa: str
    seeds: str = "all"  # all | one | ablation
    overrides: dict = field(default_factory=dict, hash=False)
    normalization: str = "frame"  # frame (the recipe's) | sentence (per-bin over time)

    @property
    def is_ecapa(self):
        return self.yaml == "train_ecapa_fefa.yaml"

    def fefa_options(self):
        """The FEFA interpretation of this row (recipe defaults unless overridden)."""
        return {
            "kernel": self.overrides.get("fefa_kernel", "local"),
            "apply": self.overrides.get("fefa_apply", "scale"),
            "rescale": self.overrides.get("fefa_rescale", True),
            "normalization": self.normalization,
        }


def _main_rows():
    rows = []
    for prefix, yaml, backbone, aggregation, placements, seeds in (
        ("tr34_tap", "train_thin_resnet34_tap.yaml", "thin-ResNet34", "TAP",
         ("none", "single", "multi"), "all"),
        ("tr34_gvlad", "train_thin_resnet34_gvlad.yaml", "thin-ResNet34", "GhostVLAD",
         ("none", "single", "multi"), "all"),
        ("tr34se_tap", "train_thin_seresnet34_tap.yaml", "thin-SEResNet34", "TAP",
         ("none", "single"), "one"),
        ("vggm_tap", "train_vggm_tap.yaml", "VGG-M", "TAP", ("none", "single"), "one"),
        ("ecapa", "train_ecapa_fefa.yaml", "ECAPA-TDNN (SpeechBrain)", "ASP",
         ("none", "single"), "one"),
    ):
        for fefa in placements:
            rows.append(Config(f"{prefix}_{fefa}", yaml, backbone, aggregation, fefa, seeds))
    return rows


def _ablation_rows():
    yaml = "train_thin_resnet34_tap.yaml"
    common = dict(yaml=yaml, backbone="thin-ResNet34", aggregation="TAP", fefa="single",
                  seeds="ablation")
    return [
        Config("abl_kernel_literal", overrides={"fefa_kernel": "literal"}, **common),
        Config("abl_apply_pooled", overrides={"fefa_apply": "pooled"}, **common),
        Config("abl_no_rescale", overrides={"fefa_rescale": False}, **common),
        Config("abl_sentence_norm", normalization="sentence", **common),
    ]


CONFIGS = {config.name: config for config in _main_rows() + _ablation_rows()}
QUICK_CONFIGS = ("tr34_tap_none", "tr34_tap_single", "abl_sentence_norm")


# ---------------------------------------------------------------------------- the plan


@dataclass
class Run:
    """One training + verification of one configuration with one seed."""

    config: Config
    seed: int
    folder: str
    train_command: list
    verify_command: list


def seeds_for(config, args):
    if config.seeds == "all":
        return list(args.seeds)
    if config.seeds == "ablation":
        return list(args.ablation_seeds)
    return list(args.seeds[:1])


def hparams_file(config, runs_dir):
    """The recipe yaml of a config; the sentence-normalization variant is derived from it."""
    if config.normalization == "frame":
        return os.path.join("hparams", config.yaml)  # relative to the recipe folder
    return os.path.join(runs_dir, "hparams", config.yaml.replace(".yaml", "_sentence_norm.yaml"))


def write_variant_hparams(config, runs_dir):
    """Writes the recipe yaml with SpeechBrain's per-sentence InputNormalization instead.

    The recipe's command-line overrides cannot carry a yaml tag (its override parser is
    ``yaml.safe_load``), so the variant is a copy of the recipe's yaml with one line
    replaced.
    """
    path = hparams_file(config, runs_dir)
    if config.normalization == "frame":
        return path
    with open(os.path.join(RECIPE, "hparams", config.yaml), encoding="utf-8") as fin:
        text = fin.read()
    if text.count(FRAME_NORM_LINE) != 1:
        raise ValueError(
            f"{config.yaml}: expected exactly one line '{FRAME_NORM_LINE}' to replace for "
            f"the sentence-normalization ablation"
        )
    header = "# Derived by benchmarks/bench_quality.py: per-sentence normalization ablation\n"
    atomic_write_text(path, header + text.replace(FRAME_NORM_LINE, SENTENCE_NORM))
    return path


def _flag(key, value):
    if value is None:
        value = "null"
    return f"--{key}={value}"


def plan_runs(args, prepared):
    """Every Run of the benchmark, longest first (better packing of parallel jobs)."""
    runs = []
    for name in args.only or args.configs:
        config = CONFIGS[name]
        for seed in seeds_for(config, args):
            folder = os.path.join(args.mode_dir, config.name, str(seed))
            overrides = {
                "corpus": "folder",
                "data_folder": args.data_folder,
                "verification_file": None,
                "skip_prep": True,
                "prep_folder": prepared,
                "output_folder": folder,
                "seed": seed,
                "fefa": config.fefa,
                "sentence_len": args.sentence_len,
                "batch_size": args.batch_size,
                "number_of_epochs": args.epochs,
                "lr": args.lr,
                "lr_final": args.lr_final,
                "num_workers": 0,
            }
            if config.is_ecapa:
                overrides["ecapa_channels"] = args.ecapa_channels
            else:
                overrides["width"] = args.width
            overrides.update(config.overrides)
            train = [sys.executable, "train_speaker_embeddings.py",
                     hparams_file(config, args.mode_dir)]
            train += [_flag(k, v) for k, v in overrides.items()] + ["--noprogressbar"]
            verify = [
                sys.executable, "speaker_verification.py", "hparams/verification.yaml",
                f"--experiment_folder={folder}",
                f"--data_folder={args.data_folder}",
                f"--verification_file={os.path.join(prepared, 'trials.txt')}",
                f"--audio_root={args.data_folder}",
            ]
            runs.append(Run(config, seed, folder, train, verify))
    cost = {"tr34_gvlad": 4, "tr34_tap": 3, "abl": 3, "tr34se": 3, "ecapa": 1, "vggm": 0}
    runs.sort(key=lambda run: -next(v for k, v in cost.items() if run.config.name.startswith(k)))
    return runs


# --------------------------------------------------------------------------- execution


def subprocess_env(threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_logged(command, log_path, threads):
    """Runs a recipe script in the recipe folder; output to ``log_path``; returns seconds."""
    start = time.perf_counter()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        completed = subprocess.run(
            command, cwd=RECIPE, env=subprocess_env(threads), stdout=log,
            stderr=subprocess.STDOUT, check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:3])} failed with exit code {completed.returncode}; "
            f"see {log_path}"
        )
    return time.perf_counter() - start


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fin:
            return json.load(fin)
    except (OSError, ValueError):
        return None


def previous_result(run):
    """The stored result of an identical earlier run, or None."""
    record = _read_json(os.path.join(run.folder, "bench_run.json"))
    if record is None or record.get("train_command") != run.train_command[1:]:
        return None
    if record.get("verify_command") != run.verify_command[1:]:
        return None
    return record


def parse_train_log(path):
    """Per-epoch validation error rates from the recipe's train_log.txt."""
    errors = []
    try:
        with open(path, encoding="utf-8") as fin:
            for line in fin:
                if "valid ErrorRate:" in line:
                    errors.append(float(line.rsplit("valid ErrorRate:", 1)[1].split()[0]))
    except OSError:
        pass
    return errors


def count_parameters(checkpoint_dir):
    """Trainable parameters of the embedding model, from its saved state dict."""
    import torch

    state = torch.load(
        os.path.join(checkpoint_dir, "embedding_model.ckpt"), map_location="cpu", weights_only=True
    )
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return int(sum(v.numel() for k, v in state.items() if not k.endswith(skip)))


def execute(run, threads, log):
    """Trains and verifies one Run (or reuses an identical earlier one)."""
    record = previous_result(run)
    if record is not None:
        log(f"reused  {run.config.name} seed {run.seed}: EER {100 * record['eer']:.2f}%")
        return record
    if os.path.isdir(run.folder):
        shutil.rmtree(run.folder)
    log_path = os.path.join(run.folder, "bench_log.txt")
    train_seconds = run_logged(run.train_command, log_path, threads)
    verify_seconds = run_logged(run.verify_command, log_path, threads)
    results = _read_json(os.path.join(run.folder, "verification", "results.json"))
    if results is None:
        raise RuntimeError(f"{run.folder}/verification/results.json is missing; see {log_path}")
    record = {
        "config": run.config.name,
        "seed": run.seed,
        "eer": results["eer"],
        "min_dcf_0.01": results["min_dcf_0.01"],
        "min_dcf_0.05": results["min_dcf_0.05"],
        "n_target": results["n_target"],
        "n_nontarget": results["n_nontarget"],
        "valid_error_per_epoch": parse_train_log(os.path.join(run.folder, "train_log.txt")),
        "parameters": count_parameters(results["checkpoint"]),
        "train_seconds": train_seconds,
        "verify_seconds": verify_seconds,
        "threads": threads,
        "train_command": run.train_command[1:],
        "verify_command": run.verify_command[1:],
    }
    protocol.write_json(os.path.join(run.folder, "bench_run.json"), record)
    log(f"done    {run.config.name} seed {run.seed}: EER {100 * record['eer']:.2f}% "
        f"(train {train_seconds / 60:.1f} min, verify {verify_seconds:.0f} s)")
    return record


def run_all(tasks, jobs):
    """Runs callables on ``jobs`` threads (each starts subprocesses); returns results."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [future.result() for future in futures]


# --------------------------------------------------------------------------- protocol


def prepare(args, log):
    """Test-speaker list, then the recipe's folder-corpus preparation (idempotent)."""
    counts = protocol.clips_per_speaker(args.data_folder)
    test, train = protocol.split_speakers(counts)
    speakers_file = os.path.join(args.runs_dir, "test_speakers.txt")
    protocol.write_speaker_list(
        speakers_file, protocol.held_out_speakers(counts),
        header="Speech Commands v0.02 test split, fixed protocol: the speakers of first hex "
               "digit 0-3; those with < 5 clips (--min-utts-test) are used nowhere",
    )
    prepared = os.path.join(args.runs_dir, "prepared")
    command = [
        sys.executable, "-m", "fefa_speechbrain.data.prepare", "folder", args.data_folder,
        prepared, "--test-speakers", speakers_file, "--seed", str(PREP_SEED),
        "--min-utts-test", str(protocol.MIN_TEST_CLIPS),
    ]
    log("preparing the corpus (fixed protocol)")
    run_logged(command, os.path.join(args.runs_dir, "prepare_log.txt"), 1)
    report = _read_json(os.path.join(prepared, "prepare_report.json"))
    summary = {
        "data_folder": args.data_folder,
        "test_speakers_rule": "first hex digit 0-3 and >= 5 clips",
        "train_speakers_rule": "first hex digit 4-f and >= 2 clips",
        "trials_rule": "every target pair of the test clips + as many seeded random "
                       f"non-target pairs (seed {PREP_SEED})",
        "test_speakers": len(report["test_speakers"]),
        "train_speakers": report["train"]["speakers"],
        "train_clips": report["train"]["rows"],
        "dev_clips": report["dev"]["rows"],
        "test_clips": len(_trial_files(os.path.join(prepared, "trials.txt"))),
        "target_trials": report["trials"]["target"],
        "nontarget_trials": report["trials"]["nontarget"],
        "command": " ".join(["python"] + command[1:]),
    }
    if summary["test_speakers"] != len(test) or summary["train_speakers"] != len(train):
        raise RuntimeError(
            f"the preparation kept {summary['test_speakers']} test / "
            f"{summary['train_speakers']} training speakers, the protocol says {len(test)} / "
            f"{len(train)}: see {prepared}/prepare_report.json"
        )
    log(f"protocol: {summary['test_speakers']} test speakers ({summary['test_clips']} clips), "
        f"{summary['train_speakers']} training speakers ({summary['train_clips']} train + "
        f"{summary['dev_clips']} dev clips), {summary['target_trials']} target + "
        f"{summary['nontarget_trials']} non-target trials")
    return prepared, summary


def _trial_files(trials_path):
    files = set()
    with open(trials_path, encoding="utf-8") as fin:
        for line in fin:
            fields = line.split()
            files.update(fields[1:3])
    return files


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return sum(1 for _ in csv.DictReader(fin))


# ------------------------------------------------------------------- noise, attention


def noise_task(args, prepared, folders, log):
    """noise_robustness.py on thin-ResNet34 + TAP with and without FEFA."""
    output = os.path.join(args.mode_dir, "noise_robustness")
    experiments = ",".join(f"{name.replace('tr34_tap_', 'fefa_')}:{folders[name]}"
                           for name in NOISE_MODELS)
    command = [
        sys.executable, "noise_robustness.py", "hparams/noise_robustness.yaml",
        f"--experiments={experiments}", f"--data_folder={args.data_folder}",
        f"--verification_file={os.path.join(prepared, 'trials.txt')}",
        f"--audio_root={args.data_folder}", f"--output_folder={output}",
    ]
    if args.snr_levels:
        command.append(f"--snr_levels=[{','.join(args.snr_levels)}]")
    log("noise robustness: " + experiments)
    seconds = run_logged(command, os.path.join(output, "bench_log.txt"), args.threads)
    document = _read_json(os.path.join(output, "noise_robustness.json"))
    with open(os.path.join(output, "noise_robustness.md"), encoding="utf-8") as fin:
        markdown = fin.read()
    plot = args.out + "_noise_robustness.png"
    shutil.copyfile(os.path.join(output, "noise_robustness.png"), plot)
    return {"rows": document["rows"], "markdown": markdown, "plot": os.path.relpath(plot, REPO),
            "seconds": seconds, "command": " ".join(["python"] + command[1:])}


def attention_task(args, prepared, folder, log):
    """plot_attention.py: mean FEFA weight per bin over every trial file."""
    import numpy as np

    output = os.path.join(args.mode_dir, "attention")
    command = [
        sys.executable, "plot_attention.py", "hparams/plot_attention.yaml",
        f"--data_folder={args.data_folder}", f"--experiment_folder={folder}",
        f"--verification_file={os.path.join(prepared, 'trials.txt')}",
        f"--audio_root={args.data_folder}", f"--output_folder={output}", "--n_overlays=2",
    ]
    log("attention plot: " + folder)
    seconds = run_logged(command, os.path.join(output, "bench_log.txt"), args.threads)
    plot = args.out + "_attention_mean.png"
    shutil.copyfile(os.path.join(output, "attention_mean.png"), plot)
    mean = np.load(os.path.join(output, "attention_mean.npy"))
    return dict(attention_summary(mean), plot=os.path.relpath(plot, REPO), seconds=seconds,
                command=" ".join(["python"] + command[1:]))


def attention_summary(mean, sample_rate=16000):
    """Where the mean attention is high and low, and its mean per frequency band.

    Example
    -------
    >>> import numpy as np
    >>> s = attention_summary(np.linspace(0.5, 1.5, 257))
    >>> s["max_hz"], round(s["max_weight"], 2), s["bands"][0]["band_hz"]
    (8000.0, 1.5, [0, 300])
    """
    import numpy as np

    mean = np.asarray(mean, dtype=float)
    hz = np.linspace(0, sample_rate / 2, mean.shape[0])
    bands = []
    for low, high in BANDS_HZ:
        inside = (hz >= low) & (hz < high)
        bands.append({"band_hz": [low, min(high, int(sample_rate // 2))],
                      "mean_weight": float(mean[inside].mean())})
    return {
        "uniform_weight": float(mean.mean()),
        "max_weight": float(mean.max()),
        "max_hz": float(hz[mean.argmax()]),
        "min_weight": float(mean.min()),
        "min_hz": float(hz[mean.argmin()]),
        "bands": bands,
        "mean_per_bin": [round(float(v), 5) for v in mean],
    }


# ------------------------------------------------------------------------------ tables


def _pm(values, scale=1.0, digits=2):
    mean, std = protocol.mean_std([scale * v for v in values])
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(records, names):
    """Per config: seeds, per-seed metrics and their mean and standard deviation."""
    summary = {}
    for name in names:
        rows = sorted((r for r in records if r["config"] == name), key=lambda r: r["seed"])
        if not rows:
            continue
        minutes = [r["train_seconds"] / 60 for r in rows]
        entry = {"seeds": [r["seed"] for r in rows], "parameters": rows[0]["parameters"],
                 "train_minutes_mean": protocol.mean_std(minutes)[0]}
        for metric in ("eer", "min_dcf_0.01", "min_dcf_0.05"):
            values = [r[metric] for r in rows]
            mean, std = protocol.mean_std(values)
            entry[metric] = {"values": values, "mean": mean, "std": std}
        summary[name] = entry
    return summary


def _metric_cells(rows):
    return [_pm([r["eer"] for r in rows], 100), _pm([r["min_dcf_0.01"] for r in rows], 1, 3),
            _pm([r["min_dcf_0.05"] for r in rows], 1, 3)]


def main_table(records):
    header = ["backbone", "aggregation", "FEFA", "params", "seeds", "EER (%)",
              "minDCF(0.01)", "minDCF(0.05)"]
    lines = []
    for config in _main_rows():
        rows = [r for r in records if r["config"] == config.name]
        if rows:
            lines.append([config.backbone, config.aggregation, config.fefa,
                          f"{rows[0]['parameters'] / 1e3:.0f} k", len(rows)] + _metric_cells(rows))
    return protocol.markdown_table(header, lines)


def ablation(records):
    """The ablation table (paired with the baseline on the same seeds) and the winner."""
    variants = [CONFIGS[ABLATION_BASELINE]] + _ablation_rows()
    seeds = {r["seed"] for r in records if r["config"].startswith("abl_")}
    base = {
        r["seed"]: r for r in records if r["config"] == ABLATION_BASELINE and r["seed"] in seeds
    }
    lines, entries = [], []
    for config in variants:
        rows = [r for r in records if r["config"] == config.name and r["seed"] in seeds]
        if not rows:
            continue
        paired = [r["eer"] - base[r["seed"]]["eer"] for r in rows if r["seed"] in base]
        delta = _pm(paired, 100) if paired and config.name != ABLATION_BASELINE else ""
        options = config.fefa_options()
        mean_eer = protocol.mean_std([r["eer"] for r in rows])[0]
        entries.append({"config": config.name, "options": options, "mean_eer": mean_eer,
                        "seeds": sorted(r["seed"] for r in rows),
                        "paired_eer_difference": paired})
        lines.append([config.name, options["kernel"], options["apply"], options["rescale"],
                      options["normalization"], len(rows)] + _metric_cells(rows) + [delta])
    header = ["variant", "kernel", "apply", "rescale", "normalization", "seeds", "EER (%)",
              "minDCF(0.01)", "minDCF(0.05)", "EER - baseline (points, paired)"]
    best = min(entries, key=lambda e: e["mean_eer"]) if entries else None
    return protocol.markdown_table(header, lines), entries, best


def attention_sentence(summary):
    """One descriptive sentence from :func:`attention_summary`."""
    bands = "; ".join(
        f"{b['band_hz'][0]}-{b['band_hz'][1]} Hz {b['mean_weight']:.2f}" for b in summary["bands"]
    )
    return (
        "Mean FEFA weight per bin (1.00 = uniform attention) goes from "
        f"{summary['min_weight']:.2f} at {summary['min_hz']:.0f} Hz to "
        f"{summary['max_weight']:.2f} at {summary['max_hz']:.0f} Hz; mean per band: {bands}."
    )


def markdown_report(report):
    b, p = report["budget"], report["protocol"]
    parts = [
        "# Verification quality on Speech Commands v0.02 (test split)"
        + (" - QUICK" if report["quick"] else ""),
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} CPUs, "
        f"{report['machine']['memory_gib']} GiB, torch {report['machine']['torch']}, "
        f"speechbrain {report['machine']['speechbrain']}  ",
        f"Date: {report['machine']['date']}; load average at start "
        f"{report['machine']['load_average_at_start']}, at end {report['load_average_at_end']}  ",
        f"Wall time: {report['wall_minutes']:.1f} min ({b['jobs']} jobs x {b['threads_per_job']} "
        f"thread(s)).",
        "",
        "Data: Speech Commands v0.02 test split (Warden 2018, CC-BY-4.0), 1 s clips. Protocol: "
        f"{p['test_speakers']} test speakers ({p['test_clips']} clips; {p['test_speakers_rule']}), "
        f"never seen in training; {p['train_speakers']} training speakers "
        f"({p['train_clips']} train + {p['dev_clips']} validation clips; "
        f"{p['train_speakers_rule']}); trials: {p['target_trials']} target pairs (all of them) "
        f"+ {p['nontarget_trials']} seeded random non-target pairs.",
        "",
        f"Budget, identical for every row: {b['epochs']} epochs x {b['steps_per_epoch']} steps "
        f"(batch {b['batch_size']}, whole {b['sentence_len']} s clips) = {b['total_steps']} steps; "
        f"Adam, LR {b['lr']} -> {b['lr_final']} (linear per epoch), softmax loss, no augmentation; "
        f"CNN width x{b['width']}, ECAPA-TDNN {b['ecapa_channels']} channels (CPU sizes). "
        "Cosine scoring, no score normalization. Mean ± sample standard deviation over seeds.",
        "",
        "## Backbones",
        "",
        report["tables"]["main"],
    ]
    if report["tables"].get("ablation"):
        best = report["ablation_best"]
        parts += [
            "",
            f"## FEFA interpretation and normalization (thin-ResNet34 + TAP, FEFA(S), seeds "
            f"{report['budget']['ablation_seeds']})",
            "",
            report["tables"]["ablation"],
            "",
            f"Lowest mean EER: `{best['config']}` ({100 * best['mean_eer']:.2f}%). The last "
            "column is the mean ± spread over seeds of (variant - baseline) on the same seed: "
            "a difference smaller than its spread is no evidence either way.",
        ]
    if "noise" in report:
        parts += ["", "## Noise robustness (first seed)", "", report["noise"]["markdown"].strip(),
                  "", f"![noise robustness]({os.path.basename(report['noise']['plot'])})"]
    if "attention" in report:
        parts += ["", "## FEFA attention after training (thin-ResNet34 + TAP, FEFA(S), first seed)",
                  "", attention_sentence(report["attention"]), "",
                  f"![mean attention]({os.path.basename(report['attention']['plot'])})"]
    return "\n".join(parts)


# --------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-folder", default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true",
                        help=f"checks: {', '.join(QUICK_CONFIGS)}, 1 seed, 1 epoch, 2 SNRs")
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="these configs only")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--ablation-seeds", nargs="+", type=int, default=None,
                        help="seeds of the ablation rows (default: the first two --seeds)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sentence-len", type=float, default=1.0)
    parser.add_argument("--width", type=float, default=0.125, help="CNN channel multiplier")
    parser.add_argument("--ecapa-channels", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--lr-final", type=float, default=0.0001)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument("--snr-levels", nargs="+", default=None,
                        help="override the recipe's SNR levels (e.g. clean 20)")
    parser.add_argument("--no-noise", dest="noise", action="store_false")
    parser.add_argument("--no-attention", dest="attention", action="store_false")
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "benchmarks", "results", "runs"))
    parser.add_argument("--out", default=None,
                        help="output prefix (default benchmarks/results/quality[_quick])")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 1
        args.only = args.only or list(QUICK_CONFIGS)
        args.snr_levels = args.snr_levels or ["clean", "20"]
    if args.ablation_seeds is None:
        args.ablation_seeds = args.seeds[:2]
    for name in ("epochs", "batch_size", "jobs", "ecapa_channels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not os.path.isdir(args.data_folder):
        parser.error(f"--data-folder {args.data_folder} does not exist")
    args.configs = list(CONFIGS)
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    args.runs_dir = os.path.abspath(args.runs_dir)
    args.mode_dir = os.path.join(args.runs_dir, "quick" if args.quick else "full")
    if args.out is None:
        args.out = os.path.join(REPO, "benchmarks", "results",
                                "quality_quick" if args.quick else "quality")
    args.out = os.path.abspath(args.out)
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    lock = threading.Lock()

    def log(message):
        with lock:
            print(f"[{(time.perf_counter() - started) / 60:6.1f} min] {message}", flush=True)

    prepared = os.path.join(args.runs_dir, "prepared")
    runs = plan_runs(args, prepared)
    if args.list:
        for run in runs:
            print(" ".join(["python"] + run.train_command[1:]))
            print(" ".join(["python"] + run.verify_command[1:]))
        print(f"{len(runs)} trainings, {args.jobs} at a time, {args.threads} thread(s) each")
        return
    machine = protocol.machine_info()
    prepared, protocol_summary = prepare(args, log)
    for config in {run.config.name: run.config for run in runs}.values():
        write_variant_hparams(config, args.mode_dir)
    log(f"{len(runs)} trainings, {args.jobs} at a time, {args.threads} thread(s) each")
    records = run_all([lambda run=run: execute(run, args.threads, log) for run in runs],
                      args.jobs)

    folders = {run.config.name: run.folder for run in runs if run.seed == args.seeds[0]}
    extra = []
    if args.noise and all(name in folders for name in NOISE_MODELS):
        extra.append(("noise", lambda: noise_task(args, prepared, folders, log)))
    if args.attention and ATTENTION_MODEL in folders:
        extra.append(("attention",
                      lambda: attention_task(args, prepared, folders[ATTENTION_MODEL], log)))
    extra_results = run_all([task for _, task in extra], args.jobs)

    train_rows = _csv_rows(os.path.join(prepared, "train.csv"))
    steps = train_rows // args.batch_size  # the recipe drops the last partial batch
    report = {
        "command": protocol.command_line(),
        "quick": args.quick,
        "machine": machine,
        "protocol": protocol_summary,
        "budget": {
            "epochs": args.epochs, "batch_size": args.batch_size,
            "sentence_len": args.sentence_len, "steps_per_epoch": steps,
            "total_steps": steps * args.epochs, "lr": args.lr, "lr_final": args.lr_final,
            "width": args.width, "ecapa_channels": args.ecapa_channels,
            "seeds": args.seeds, "ablation_seeds": args.ablation_seeds,
            "jobs": args.jobs, "threads_per_job": args.threads,
        },
        "runs": records,
        "summary": summarize(records, [run.config.name for run in runs]),
        "tables": {"main": main_table(records)},
    }
    table, entries, best = ablation(records)
    if any(r["config"].startswith("abl_") for r in records):
        report["tables"]["ablation"] = table
        report["ablation"] = entries
        report["ablation_best"] = best
    for (name, _), result in zip(extra, extra_results):
        report[name] = result
    report["load_average_at_end"] = protocol.load_average()
    report["wall_minutes"] = (time.perf_counter() - started) / 60
    text = markdown_report(report)
    protocol.write_json(args.out + ".json", report)
    protocol.write_markdown(args.out + ".md", text)
    print(text)
    log(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
