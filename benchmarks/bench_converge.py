"""Converged trainings on the shared real speech: learning-speed suspects, the protocol.

Each experiment is a recipe yaml plus overrides, trained with the recipe's own
``train_speaker_embeddings.py`` on the fixed Speech Commands protocol (prepared by
``bench_quality.py``'s preparation: 184 training speakers, 40 test speakers, 20,007
trials), then scored with ``speaker_verification.py``. Runs are sequential inside one
call (``--threads`` torch threads each); start one call per core for parallel queues.
A killed call is resumed by running it again: the recipe resumes from its checkpoint,
and finished runs are skipped.

Per run, ``<runs-dir>/<name>/converge_run.json`` keeps the commands, the per-epoch
training loss and validation error, the EER and minDCF, the wall time and the machine.
``--report`` gathers every run into ``benchmarks/results/converge.{json,md}``; with
``--pairs FIRST:SECOND ...`` it also pairs runs by seed (same data order and
initialization) and gives the mean and spread of the differences
(``results/converge_pairs.{json,md}``).

Examples
--------
python benchmarks/bench_converge.py --list
python benchmarks/bench_converge.py tr34_base tr34_no_relu --threads 1
python benchmarks/bench_converge.py --report
python benchmarks/bench_converge.py --report --pairs tr34_conv_single:tr34_conv_none
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import namedtuple

import bench_quality
import protocol
from fefa_speechbrain.atomic import atomic_open, atomic_write_text
from fefa_speechbrain.data.trials import format_trial_line, generate_trials
from fefa_speechbrain.hparams import AUGMENTATIONS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "VoxCeleb", "FEFA")
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data",
                                             "speech_commands_v002_test"))
TR34 = "train_thin_resnet34_tap.yaml"
ECAPA = "train_ecapa_fefa.yaml"

# The learning-speed budget: 4 epochs x 210 steps (batch 16 of 1 s), width 0.25.
SUSPECT = {"width": 0.25, "number_of_epochs": 4, "lr": 0.001, "lr_final": 0.0001,
           "batch_size": 16, "sentence_len": 1.0, "fefa": "single"}
EXPERIMENTS = {
    # one suspect at a time, against tr34_base (the published settings at CPU width)
    "tr34_base": (TR34, dict(SUSPECT)),
    "tr34_no_relu": (TR34, dict(SUSPECT, emb_relu=False)),
    "tr34_log": (TR34, dict(SUSPECT, log_spectrum=True)),
    "tr34_lr3e-3_warmup": (TR34, dict(SUSPECT, lr=0.003, lr_final=0.0003, lr_warmup_steps=200)),
    "tr34_batch64": (TR34, dict(SUSPECT, batch_size=64, lr=0.002, lr_final=0.0002)),
    "tr34_width0.5": (TR34, dict(SUSPECT, width=0.5)),
    "ecapa128_suspect": (ECAPA, dict(SUSPECT, width=None, ecapa_channels=128)),
    "tr34_fbank80": (os.path.join(REPO, "benchmarks", "hparams", "train_thin_resnet34_tap_fbank.yaml"),
                     dict(SUSPECT)),
}
# Converged candidates: 20 epochs x 105 steps (batch 32 of 1 s), warm-up, channel augmentation.
CONVERGE = {"number_of_epochs": 20, "batch_size": 32, "sentence_len": 1.0, "lr": 0.002,
            "lr_final": 0.0001, "lr_warmup_steps": 200, "random_channel": True}
# ECAPA-TDNN at 128 channels: 10 epochs x 210 steps (batch 16 of 1 s); augmentations one by one.
ECAPA128 = {"ecapa_channels": 128, "number_of_epochs": 10, "batch_size": 16, "sentence_len": 1.0,
            "lr": 0.001, "lr_final": 0.0001, "fefa": "single"}
EXPERIMENTS.update({
    "ecapa128_single": (ECAPA, dict(ECAPA128)),
    "ecapa128_single_rc": (ECAPA, dict(ECAPA128, random_channel=True)),
    "ecapa128_single_aug": (ECAPA, dict(ECAPA128, augment=True)),
    "ecapa128_single_aam": (ECAPA, dict(ECAPA128, head="aam")),
    "ecapa128_none": (ECAPA, dict(ECAPA128, fefa="none")),
    "ecapa128_single_fefalr10": (ECAPA, dict(ECAPA128, fefa_lr_multiplier=10.0)),
    "ecapa128_single_fefalr100": (ECAPA, dict(ECAPA128, fefa_lr_multiplier=100.0)),
    # the readings of eq. (1) other than the default (local kernel, scale, rescaled)
    "ecapa128_kernel_literal": (ECAPA, dict(ECAPA128, fefa_kernel="literal")),
    "ecapa128_apply_pooled": (ECAPA, dict(ECAPA128, fefa_apply="pooled")),
    "ecapa128_no_rescale": (ECAPA, dict(ECAPA128, fefa_rescale=False)),
})
# Augmentations one at a time on the shipped model's settings (AAM head). Each augmented
# batch is followed by its augmented copy (SpeechBrain's Augmenter, concat_original), so a
# step costs about twice as much.
def only(augmentation):
    """The recipe flags that switch SpeechBrain's Augmenter on with one augmentation."""
    return {"augment": True, **{key: key == augmentation for key in AUGMENTATIONS}}


EXPERIMENTS.update({
    "ecapa128_aam_rc": (ECAPA, dict(ECAPA128, head="aam", random_channel=True)),
    "ecapa128_aam_speed": (ECAPA, dict(ECAPA128, **only("augment_speed"), head="aam")),
    "ecapa128_aam_noise": (ECAPA, dict(ECAPA128, **only("augment_noise"), head="aam")),
    "ecapa128_aam_babble": (ECAPA, dict(ECAPA128, **only("augment_babble"), head="aam")),
    "ecapa128_aam_reverb": (ECAPA, dict(ECAPA128, **only("augment_reverb"), head="aam")),
    # the shipped model's settings with FEFA at the rate chosen on the validation split
    "ecapa128_aam_reverb_fefalr10": (ECAPA, dict(ECAPA128, **only("augment_reverb"), head="aam",
                                                 fefa_lr_multiplier=10.0)),
})
# Everyday audio (issue 24): the shipped model's settings with every augmentation of
# real recordings (each augmented copy gets 1-2 of them), one suspect at a time beside it:
# the front-end normalization (per frame against per utterance with a 60 dB floor).
EVERYDAY = dict(ECAPA128, head="aam", augment=True, **{key: key in (
    "augment_reverb", "augment_babble", "augment_coloured_noise", "augment_band_limit",
    "augment_bit_depth", "augment_codec", "augment_clip") for key in AUGMENTATIONS})
# THRESHOLD_SLICE: the training speakers whose id starts with "f" (17 speakers, 318 clips)
# are left out of training and validation, so that a model's decision thresholds are set
# on speakers it never saw (``<runs-dir>/prepared_threshold/threshold_trials.txt``).
EVERYDAY["threshold_slice"] = "f"
EXPERIMENTS.update({
    "ecapa128_everyday": (ECAPA, dict(EVERYDAY)),
    "ecapa128_everyday_utt": (ECAPA, dict(EVERYDAY, feature_norm="utterance")),
    "ecapa128_everyday_none": (ECAPA, dict(EVERYDAY, fefa="none")),
    "ecapa128_everyday_e20": (ECAPA, dict(EVERYDAY, number_of_epochs=20)),
    # each frame's mean removed before the window (Spectrogram(remove_dc=True))
    "ecapa128_everyday_dc": (ECAPA, dict(EVERYDAY, remove_dc=True)),
    "ecapa128_reverb_utt": (ECAPA, dict(ECAPA128, **only("augment_reverb"), head="aam",
                                        feature_norm="utterance")),
})
# The paper's CNNs at the ECAPA128 budget (10 epochs x 210 steps, batch 16 of 1 s, Adam
# 1e-3 -> 1e-4, softmax) on the paper's 257-bin input, width 0.25, with the one suspect
# that the validation split chose (no ReLU on the embedding: error 0.40 against 0.51
# after 4 epochs, validation EER 8.6 % against 15.1 %).
CNN10 = dict(SUSPECT, number_of_epochs=10, emb_relu=False)
GVLAD = "train_thin_resnet34_gvlad.yaml"
for _fefa in ("none", "single", "multi"):
    EXPERIMENTS[f"tr34_conv_{_fefa}"] = (TR34, dict(CNN10, fefa=_fefa))
    EXPERIMENTS[f"tr34gv_conv_{_fefa}"] = (GVLAD, dict(CNN10, fefa=_fefa))
for _fefa in ("none", "single"):
    EXPERIMENTS[f"vggm_conv_{_fefa}"] = ("train_vggm_tap.yaml", dict(CNN10, fefa=_fefa))
    EXPERIMENTS[f"setr34_conv_{_fefa}"] = ("train_thin_seresnet34_tap.yaml", dict(CNN10, fefa=_fefa))
# FEFA's learning rate at the multiplier chosen on ECAPA-TDNN's validation split (x10)
EXPERIMENTS["tr34_conv_single_fefalr10"] = (TR34, dict(CNN10, fefa="single", fefa_lr_multiplier=10.0))
EXPERIMENTS["vggm_conv_single_fefalr10"] = ("train_vggm_tap.yaml",
                                            dict(CNN10, fefa="single", fefa_lr_multiplier=10.0))
# Wider: the shipped model's settings at 256 channels (about 3.4 M parameters; about four
# times the compute of a step at 128 channels).
EXPERIMENTS["ecapa256_aam"] = (ECAPA, dict(ECAPA128, ecapa_channels=256, head="aam"))
# The model zoo (issue 26): the paper's four systems with FEFA(S) at the CNN protocol above
# (CNN10), with the front-end the everyday-audio work settled (each frame's mean removed)
# and decision thresholds set on the 17 held-out speakers of THRESHOLD_SLICE. Without
# augmentation: SpeechBrain's Augmenter doubles a step, and a CNN step already costs four
# times ECAPA-TDNN's (0.1).
ZOO = dict(CNN10, fefa="single", remove_dc=True, threshold_slice="f")
EXPERIMENTS.update({
    "zoo_vggm_tap": ("train_vggm_tap.yaml", dict(ZOO)),
    "zoo_tr34_tap": (TR34, dict(ZOO)),
    "zoo_tr34_gvlad": (GVLAD, dict(ZOO)),
    "zoo_setr34_tap": ("train_thin_seresnet34_tap.yaml", dict(ZOO)),
})
# The same with the everyday-audio augmentations of EVERYDAY (each augmented copy gets 1-2
# of them; SpeechBrain's Augmenter keeps the clean batch beside it, doubling a step).
ZOO_EVERYDAY = dict(ZOO, augment=True, **{k: v for k, v in EVERYDAY.items() if k.startswith("augment_")})
EXPERIMENTS.update({f"{name}_everyday": (EXPERIMENTS[name][0], dict(ZOO_EVERYDAY)) for name in (
    "zoo_vggm_tap", "zoo_tr34_tap", "zoo_tr34_gvlad", "zoo_setr34_tap")})
EXPERIMENTS.update({
    "ecapa256_single_rc": (ECAPA, dict(CONVERGE, ecapa_channels=256, fefa="single")),
    "ecapa256_none_rc": (ECAPA, dict(CONVERGE, ecapa_channels=256, fefa="none")),
})


def _flag(key, value):
    return f"--{key}={'null' if value is None else value}"


def commands(name, args):
    """(train command, verify command, run folder) of one experiment (``name[:seed]``)."""
    base, _, seed = name.partition(":")
    yaml, overrides = EXPERIMENTS[base]
    folder = run_folder(name, args)
    prepared = prepared_folder(name, args)
    overrides = {k: v for k, v in overrides.items() if k != "threshold_slice"}
    settings = {
        "corpus": "folder", "data_folder": args.data_folder, "verification_file": None,
        "skip_prep": True, "prep_folder": prepared, "output_folder": folder,
        "num_workers": 0, "seed": int(seed) if seed else args.seed,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    yaml = os.path.relpath(os.path.join(RECIPE, "hparams", yaml), RECIPE)
    train = [sys.executable, "train_speaker_embeddings.py", yaml]
    train += [_flag(k, v) for k, v in settings.items()] + ["--noprogressbar"]
    train += args.extra
    verify = [sys.executable, "speaker_verification.py", "hparams/verification.yaml",
              f"--data_folder={args.data_folder}", f"--experiment_folder={folder}",
              f"--verification_file={os.path.join(args.runs_dir, 'prepared', 'trials.txt')}",
              f"--audio_root={args.data_folder}"]
    return train, verify, folder


THRESHOLD_PREPARED = "prepared_threshold"


def prepared_folder(name, args):
    """The prepared folder a run trains on: ``prepared``, or for an experiment with a
    ``threshold_slice`` the same preparation without those speakers (made once)."""
    prefix = EXPERIMENTS[name.partition(":")[0]][1].get("threshold_slice")
    if prefix is None:
        return os.path.join(args.runs_dir, "prepared")
    return write_threshold_slice(args, prefix)


def write_threshold_slice(args, prefix):
    """``prepared_threshold/``: train.csv and dev.csv without the speakers whose id starts
    with ``prefix``, and ``threshold_trials.txt``: every target pair of those speakers'
    clips and as many seeded non-target pairs (their thresholds come from these)."""
    source = os.path.join(args.runs_dir, "prepared")
    target = os.path.join(args.runs_dir, THRESHOLD_PREPARED)
    trials_path = os.path.join(target, "threshold_trials.txt")
    if os.path.isfile(trials_path):
        return target
    os.makedirs(target, exist_ok=True)
    Utt = namedtuple("Utt", ["speaker", "rel"])
    held = set()
    for split in ("train", "dev"):
        with open(os.path.join(source, f"{split}.csv"), newline="", encoding="utf-8") as fin:
            reader = csv.DictReader(fin)
            rows = list(reader)
        kept = [row for row in rows if not row["spk_id"].startswith(prefix)]
        held.update(Utt(row["spk_id"], os.path.relpath(row["wav"], args.data_folder))
                    for row in rows if row["spk_id"].startswith(prefix))
        with atomic_open(os.path.join(target, f"{split}.csv"), "w", newline="") as fout:
            writer = csv.DictWriter(fout, fieldnames=reader.fieldnames)
            writer.writeheader()
            writer.writerows(kept)
    trials = generate_trials(sorted(held), seed=args.seed)
    atomic_write_text(trials_path, "".join(format_trial_line(t) for t in trials))
    return target


def write_dev_trials(args):
    """The validation trials: every target pair of the dev clips (held-out clips of the
    training speakers, ``dev.csv``) and as many seeded non-target pairs. Settings are
    chosen on these and on the validation error, never on the test trials."""
    return write_dev_trials_in(os.path.join(args.runs_dir, "prepared"), args)


def write_dev_trials_in(prepared, args):
    """:func:`write_dev_trials` for the dev clips of one prepared folder."""
    path = os.path.join(prepared, "dev_trials.txt")
    if os.path.isfile(path):
        return path
    Utt = namedtuple("Utt", ["speaker", "rel"])
    with open(os.path.join(prepared, "dev.csv"), newline="", encoding="utf-8") as fin:
        utts = {Utt(row["spk_id"], os.path.relpath(row["wav"], args.data_folder))
                for row in csv.DictReader(fin)}
    trials = generate_trials(sorted(utts), seed=args.seed)
    atomic_write_text(path, "".join(format_trial_line(t) for t in trials))
    return path


def run_folder(name, args):
    """``<runs-dir>/<name>``, or ``<runs-dir>/<name>_s<seed>`` for ``name:seed``."""
    base, _, seed = name.partition(":")
    return os.path.join(args.runs_dir, protocol.seeded_name(base, seed))


def dev_verify_command(name, args):
    """Verification on the validation trials (pairs of dev clips, training speakers)."""
    folder = run_folder(name, args)
    trials = write_dev_trials_in(prepared_folder(name, args), args)
    return [sys.executable, "speaker_verification.py", "hparams/verification.yaml",
            f"--data_folder={args.data_folder}", f"--experiment_folder={folder}",
            f"--verification_file={trials}",
            f"--audio_root={args.data_folder}", f"--output_folder={folder}/verification_dev"]


def dev_results(name, args):
    """EER and minDCF on the validation trials (computed once, then read back)."""
    folder = run_folder(name, args)
    path = os.path.join(folder, "verification_dev", "results.json")
    if not os.path.isfile(path):
        command = dev_verify_command(name, args)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        with open(os.path.join(folder, "converge_log.txt"), "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            subprocess.run(command, cwd=RECIPE, env=env, stdout=log, stderr=subprocess.STDOUT,
                           check=True)
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def parse_log(path):
    """[(epoch, train loss, valid loss, valid error)] from the recipe's train_log.txt."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if "valid ErrorRate:" not in line:
                continue
            fields = dict(part.strip().rsplit(": ", 1) for part in line.replace(" - ", ",").split(","))
            rows.append((int(fields["epoch"]), float(fields["train loss"]),
                         float(fields["valid loss"]), float(fields["valid ErrorRate"])))
    return rows


def run_one(name, args):
    train, verify, folder = commands(name, args)
    record_path = os.path.join(folder, "converge_run.json")
    if os.path.isfile(record_path):
        print(f"[converge] {name}: done before, skipped", flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")
    os.makedirs(folder, exist_ok=True)
    log_path = os.path.join(folder, "converge_log.txt")
    seconds = {}
    for stage, command in (("train", train), ("verify", verify)):
        start = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            done = subprocess.run(command, cwd=RECIPE, env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.exit(f"[converge] {name}: {stage} failed ({done.returncode}), see {log_path}")
        seconds[stage] = time.perf_counter() - start
    with open(os.path.join(folder, "verification", "results.json"), encoding="utf-8") as fin:
        results = json.load(fin)
    dev = dev_results(name, args)
    record = {
        "name": name, "machine": protocol.machine_info(), "threads": args.threads,
        "train_command": " ".join(["python"] + train[1:]),
        "verify_command": " ".join(["python"] + verify[1:]),
        "epochs": parse_log(os.path.join(folder, "train_log.txt")),
        "eer": results["eer"], "min_dcf_0.01": results["min_dcf_0.01"],
        "min_dcf_0.05": results["min_dcf_0.05"], "seconds": seconds,
        "dev_eer": dev["eer"], "dev_min_dcf_0.01": dev["min_dcf_0.01"],
        "dev_verify_command": " ".join(["python"] + dev_verify_command(name, args)[1:]),
    }
    protocol.write_json(record_path, record)
    last = record["epochs"][-1] if record["epochs"] else None
    print(f"[converge] {name}: EER {100 * record['eer']:.2f} %, last epoch {last}, "
          f"train {seconds['train'] / 60:.1f} min", flush=True)


def report(args):
    records = []
    for name in sorted(os.listdir(args.runs_dir)):
        path = os.path.join(args.runs_dir, name, "converge_run.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fin:
                record = json.load(fin)
            name = record["name"]
            if "dev_eer" not in record:
                dev = dev_results(name, args)
                record.update({"dev_eer": dev["eer"], "dev_min_dcf_0.01": dev["min_dcf_0.01"]})
                record["dev_verify_command"] = " ".join(
                    ["python"] + dev_verify_command(name, args)[1:])
                protocol.write_json(path, record)
            records.append(record)
    lines = ["| run | epochs | valid error per epoch | dev EER % | test EER % | "
             "test minDCF(0.01) |", "|---|---|---|---|---|---|"]
    for r in records:
        curve = " ".join(f"{e[3]:.2f}" for e in r["epochs"])
        lines.append(f"| {r['name']} | {len(r['epochs'])} | {curve} | {100 * r['dev_eer']:.2f} | "
                     f"{100 * r['eer']:.2f} | {r['min_dcf_0.01']:.3f} |")
    text = "\n".join(lines)
    out = os.path.join(REPO, "benchmarks", "results", "converge")
    protocol.write_json(out + ".json", {"runs": records})
    protocol.write_markdown(out + ".md", text)
    print(text)
    return records


def seed_of(name, default=1):
    """The seed of a run name: ``tr34_conv_none:3`` -> 3, ``tr34_conv_none`` -> ``default``."""
    _, _, seed = name.partition(":")
    return int(seed) if seed else default


# (label, value of a run record, scale, decimals); EERs in points
PAIR_METRICS = (("best validation error", lambda r: min(e[3] for e in r["epochs"]), 1.0, 3),
                ("validation EER", lambda r: r["dev_eer"], 100.0, 2),
                ("test EER", lambda r: r["eer"], 100.0, 2),
                ("test minDCF(0.01)", lambda r: r["min_dcf_0.01"], 1.0, 3))


def paired(records, first, second, default_seed=1):
    """Runs of the experiments ``first`` and ``second`` paired by seed.

    Returns ``{"first", "second", "seeds", "rows": [(seed, [(a, b) per metric])],
    "differences": {metric: (mean, sd) of a - b}}`` over the seeds that both have.
    """
    runs = {(record["name"].partition(":")[0], seed_of(record["name"], default_seed)): record
            for record in records}
    seeds = protocol.common_seeds(runs, first, second)
    rows = [(seed, [(scale * get(runs[(first, seed)]), scale * get(runs[(second, seed)]))
                    for _, get, scale, _ in PAIR_METRICS]) for seed in seeds]
    differences, tests = {}, {}
    if rows:
        for label, _, _, _ in PAIR_METRICS:
            tests[label] = protocol.paired_test(metric_differences(rows, label))
            differences[label] = (tests[label]["mean"], tests[label]["sd"])
    return {"first": first, "second": second, "seeds": seeds, "rows": rows,
            "differences": differences, "tests": tests}


def metric_differences(rows, label):
    """The differences ``first - second`` of one metric (a :data:`PAIR_METRICS` label) of
    :func:`paired` rows."""
    index = [name for name, _, _, _ in PAIR_METRICS].index(label)
    return [values[index][0] - values[index][1] for _, values in rows]


def pooled(records, pools, default_seed=1):
    """The differences of several pairings pooled, every metric: ``pools`` maps a name to
    ``FIRST:SECOND`` specs; returns ``[{"name", "pairs", "tests": {metric: paired_test}}]``."""
    result = []
    for name, specs in pools.items():
        rows = []
        for spec in specs:
            rows += paired(records, *spec.split(":", 1), default_seed)["rows"]
        if not rows:
            raise ValueError(f"pool {name!r}: none of {specs} has a pair of finished runs")
        result.append({"name": name, "pairs": specs, "tests": {
            label: protocol.paired_test(metric_differences(rows, label)) for label, _, _, _ in PAIR_METRICS}})
    return result


def pools_markdown(pools):
    """The :func:`pooled` results as one markdown table: per metric, mean ± sd of the
    differences and :func:`protocol.evidence`."""
    header = ["pool", "pairings", "pairs"] + [label for label, _, _, _ in PAIR_METRICS]
    lines = []
    for pool in pools:
        cells = []
        for label, _, _, digits in PAIR_METRICS:
            test = pool["tests"][label]
            cells.append("{:+.{d}f} ± {:.{d}f}; {}".format(
                test["mean"], test["sd"], protocol.evidence(test), d=digits))
        lines.append([pool["name"], ", ".join(pool["pairs"]), str(pool["tests"]["test EER"]["n"])] + cells)
    return ("#### Pooled differences (first - second; EERs in points)\n\n"
            + protocol.markdown_table(header, lines))


def pairs_markdown(result):
    """One markdown table of a :func:`paired` result, its last row the mean ± sd of a - b."""
    first, second = result["first"], result["second"]
    header = ["seed"] + [f"{label}: {first} / {second}" for label, _, _, _ in PAIR_METRICS]
    lines = [[str(seed)] + [f"{a:.{digits}f} / {b:.{digits}f}"
                            for (_, _, _, digits), (a, b) in zip(PAIR_METRICS, values)]
             for seed, values in result["rows"]]
    if result["rows"]:
        spread = len(result["rows"]) > 1  # no spread from one pair
        lines.append([f"{first} - {second}" + (", mean ± sd" if spread else "")] + [
            "{:+.{d}f}".format(result["differences"][label][0], d=digits)
            + (" ± {:.{d}f}".format(result["differences"][label][1], d=digits) if spread else "")
            for label, _, _, digits in PAIR_METRICS])
    count = len(result["seeds"])
    text = (f"#### {first} against {second} ({count} seed{'s' if count != 1 else ''})\n\n"
            + protocol.markdown_table(header, lines))
    if result["tests"]:
        text += f"\n\nTest EER: {first} {protocol.evidence(result['tests']['test EER'])}."
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"experiments: {sorted(EXPERIMENTS)}")
    parser.add_argument("--data-folder", default=DEFAULT_DATA)
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "benchmarks", "results", "runs"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--extra", nargs="*", default=[], help="more recipe flags, every run")
    parser.add_argument("--pairs", nargs="+", default=[], metavar="FIRST:SECOND",
                        help="with --report: pair these experiments by seed "
                             "(results/converge_pairs.{md,json})")
    parser.add_argument("--pool", nargs="+", default=[], metavar="NAME=FIRST:SECOND,...",
                        help="with --report: pool the test-EER differences of these pairings")
    args = parser.parse_args(argv)
    if (args.pairs or args.pool) and not args.report:
        parser.error("--pairs and --pool pair finished runs: give them with --report")
    pools = {}
    for spec in args.pool:
        name, _, pairings = spec.partition("=")
        if not name or not pairings or any(":" not in p for p in pairings.split(",")):
            parser.error(f"--pool {spec!r}: expected NAME=FIRST:SECOND[,FIRST:SECOND...]")
        pools[name] = pairings.split(",")
    args.runs_dir = os.path.abspath(args.runs_dir)
    if args.report:
        write_dev_trials(args)
        records = report(args)
        if args.pairs or pools:
            results = [paired(records, *spec.split(":", 1), args.seed) for spec in args.pairs]
            try:
                pool_results = pooled(records, pools, args.seed)
            except ValueError as error:
                parser.error(str(error))
            text = f"Command: `{protocol.command_line()}`\n\n" + "\n\n".join(
                [pairs_markdown(result) for result in results]
                + ([pools_markdown(pool_results)] if pool_results else []))
            out = os.path.join(REPO, "benchmarks", "results", "converge_pairs")
            protocol.write_json(out + ".json", {"command": protocol.command_line(), "pairs": results,
                                                "pools": pool_results})
            protocol.write_markdown(out + ".md", text)
            print(text)
        return
    unknown = [name for name in args.names if name.partition(":")[0] not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiments {unknown}; choose from {sorted(EXPERIMENTS)}")
    if not args.list:
        # the fixed protocol's preparation (idempotent), as bench_quality.py runs it
        bench_quality.prepare(args, lambda message: print(f"[converge] {message}", flush=True))
        write_dev_trials(args)
    for name in args.names or (sorted(EXPERIMENTS) if args.list else []):
        if args.list:
            train, verify, _ = commands(name, args)
            print(" ".join(["python"] + train[1:]))
            continue
        run_one(name, args)


if __name__ == "__main__":
    main()
