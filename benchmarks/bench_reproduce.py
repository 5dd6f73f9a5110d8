"""Does re-running a shipped model's training command reproduce it?

Trains the experiment again with ``bench_converge.py`` in a fresh runs folder (so the
corpus is prepared again too), exports the best checkpoint with the recipe's
``export_pretrained.py`` and compares it with the shipped pretrained folder: every tensor
of every checkpoint the two folders share (bit for bit, and the largest difference), and
the run's validation curve, EER and minDCF with the original run's ``converge_run.json``
when it is given. Writes ``benchmarks/results/reproduce_<name>.{json,md}``.

Example
-------
python benchmarks/bench_reproduce.py ecapa128_single_aam \
    ../pretrained/fefa-ecapa128-speechcommands --runs-dir /tmp/repro \
    --original results/runs/ecapa128_single_aam/converge_run.json
"""

import argparse
import json
import os
import pickle
import subprocess
import sys

import torch

import bench_converge
import protocol

METRICS = ("eer", "min_dcf_0.01", "min_dcf_0.05", "dev_eer", "dev_min_dcf_0.01")


def compare_checkpoints(folder_a, folder_b):
    """{checkpoint file: (bit-identical, largest absolute difference)} of shared files."""
    result = {}
    for name in sorted(os.listdir(folder_b)):
        path_a, path_b = os.path.join(folder_a, name), os.path.join(folder_b, name)
        if not name.endswith(".ckpt") or not os.path.isfile(path_a):
            continue
        try:
            state_a = torch.load(path_a, map_location="cpu")
            state_b = torch.load(path_b, map_location="cpu")
        except pickle.UnpicklingError:  # not a torch file (SpeechBrain's label encoder is text)
            with open(path_a, "rb") as file_a, open(path_b, "rb") as file_b:
                result[name] = (file_a.read() == file_b.read(), None)
            continue
        if not isinstance(state_b, dict) or set(state_a) != set(state_b):
            result[name] = (state_a == state_b, None)
            continue
        tensors = [key for key in state_b if torch.is_tensor(state_b[key])]
        same = all(torch.equal(state_a[key], state_b[key]) for key in tensors)
        largest = max((float((state_a[k].double() - state_b[k].double()).abs().max())
                       for k in tensors if state_b[k].numel()), default=0.0)
        result[name] = (same, largest)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a bench_converge experiment")
    parser.add_argument("pretrained", help="the shipped pretrained folder")
    parser.add_argument("--runs-dir", required=True, help="a fresh folder for the re-run")
    parser.add_argument("--data-folder", default=bench_converge.DEFAULT_DATA)
    parser.add_argument("--original", default=None, help="the original run's converge_run.json")
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, "bench_converge.py", args.name, "--runs-dir", args.runs_dir,
                    "--data-folder", args.data_folder],
                   cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
    run = bench_converge.run_folder(args.name, args)
    export = os.path.join(args.runs_dir, f"{args.name}_export")
    subprocess.run([sys.executable, "export_pretrained.py", run, export, "--overwrite"],
                   cwd=bench_converge.RECIPE,
                   check=True)
    checkpoints = compare_checkpoints(export, args.pretrained)
    with open(os.path.join(run, "converge_run.json"), encoding="utf-8") as fin:
        rerun = json.load(fin)
    report = {"command": protocol.command_line(), "machine": protocol.machine_info(),
              "checkpoints": {k: {"identical": s, "largest_difference": d}
                              for k, (s, d) in checkpoints.items()},
              "rerun": {key: rerun[key] for key in METRICS}, "rerun_epochs": rerun["epochs"]}
    lines = [f"Command: `{report['command']}`", f"Machine: {report['machine']['cpu']}, "
             f"{report['machine']['date']}", "", "| checkpoint | bit-identical | largest difference |",
             "|---|---|---|"]
    lines += [f"| {k} | {s} | {d} |" for k, (s, d) in checkpoints.items()]
    if args.original:
        with open(args.original, encoding="utf-8") as fin:
            original = json.load(fin)
        report["original"] = {key: original[key] for key in METRICS}
        report["same_curve"] = original["epochs"] == rerun["epochs"]
        lines += ["", "| metric | original | re-run |", "|---|---|---|"]
        lines += [f"| {key} | {original[key]:.6f} | {rerun[key]:.6f} |" for key in METRICS]
        lines += ["", f"Same per-epoch losses and validation errors: {report['same_curve']}"]
    out = os.path.join(bench_converge.REPO, "benchmarks", "results", f"reproduce_{args.name}")
    protocol.write_json(out + ".json", report)
    protocol.write_markdown(out + ".md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
