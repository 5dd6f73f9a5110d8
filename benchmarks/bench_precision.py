"""fp32 against bf16 autocast, channels_last and torch.compile training steps on this CPU.

For every backbone of the recipe (FEFA(S)) and SpeechBrain's ECAPA-TDNN recipe model,
one fresh process builds the variants of that model (fp32, bf16, and for the 2-D CNNs
fp32 and bf16 with ``channels_last`` weights) and times their training steps
interleaved (A B C A B C ...), so that drifts of a shared machine hit all variants alike;
a variant's speed-up is the median over repetitions of (fp32 step time / its step time).
The report keeps the CPU model and whether it has ``avx512_bf16`` and ``amx_bf16``:
without AMX, bf16 matrix products gain little on a CPU, and autocast's casts can make
a step slower.

Examples
--------
python benchmarks/bench_precision.py --quick
python benchmarks/bench_precision.py --compile --models thin_resnet34_tap ecapa_spectrogram
python benchmarks/bench_precision.py --width full --threads 2 --batch 32 --crop 2
"""

import argparse
import concurrent.futures
import os
import statistics
import tempfile

import bench_speed
import protocol

VARIANTS = {  # name -> (precision, channels_last, torch.compile of the embedding model)
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "fp32+channels_last": ("fp32", True, False),
    "bf16+channels_last": ("bf16", True, False),
    "fp32+compile": ("fp32", False, True),
}
MODELS = ("vggm_tap", "thin_resnet34_tap", "thin_resnet34_gvlad", "thin_seresnet34_tap",
          "ecapa_spectrogram", "sb_ecapa")
ONE_D = ("ecapa_spectrogram", "sb_ecapa")


def cpu_flags():
    """The bf16-related flags of /proc/cpuinfo (empty where the file is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            flags = next((line.split(":", 1)[1].split() for line in fin
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {flag: flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")}


def time_model(model, variants, settings, warmup, reps):
    """Interleaved step times of some variants of one model (run in a fresh process)."""
    import torch

    bench_speed._set_threads(settings)
    config = {"model": model, "fefa": "single", "width": settings["width"]}
    if model == "sb_ecapa":
        config["width"] = "full"
    with tempfile.TemporaryDirectory() as tmpdir:
        trainers = {}
        for name in variants:
            precision, channels_last, compiled = VARIANTS[name]
            trainer = bench_speed.Trainer(config, dict(settings, precision=precision), tmpdir)
            if channels_last:
                trainer.modules["embedding_model"].to(memory_format=torch.channels_last)
            if compiled:  # compiled on the first (warm-up) step; same parameters
                trainer.modules["embedding_model"] = torch.compile(trainer.modules["embedding_model"])
            trainers[name] = trainer
        for trainer in trainers.values():
            for _ in range(warmup):
                trainer.step()
        times = {name: [] for name in trainers}
        for _ in range(reps):
            for name, trainer in trainers.items():
                times[name].append(trainer.step())
    rows = []
    for name, steps in times.items():
        ratios = [f / s for f, s in zip(times["fp32"], steps)]
        rows.append({"model": model, "variant": name, "step_seconds": steps,
                     "median_step_seconds": statistics.median(steps),
                     "speedup_vs_fp32": statistics.median(ratios),
                     "parameters": trainers[name].parameters})
    return rows


def _cells(row):
    if row.get("crashed"):
        return "the process crashed (its stderr is in the run's log) | n/a"
    return f"{row['median_step_seconds']:.3f} | {row['speedup_vs_fp32']:.2f}"


def markdown(report):
    machine = report["machine"]
    flags = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in report["cpu_flags"].items())
    lines = [
        f"Command: `{report['command']}`",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores; {flags}; "
        f"{machine['date']}; load average at start {machine['load_average_at_start']}, "
        f"at end {report['load_average_at_end']}",
        f"Settings: batch {report['settings']['batch']} x {report['settings']['crop']} s, "
        f"width {report['settings']['width']}, {report['settings']['threads']} thread(s), "
        f"{report['reps']} timed steps per variant after {report['warmup']} warm-up",
        "",
        "| model | variant | median step (s) | speed-up vs fp32 |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['model']} | {row['variant']} | {_cells(row)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--width", choices=list(bench_speed.WIDTHS), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 timed steps, tiny batch")
    parser.add_argument("--compile", action="store_true",
                        help="only fp32 against fp32 + torch.compile (inductor), one process each model")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.batch, args.models = 2, 4, ["thin_resnet34_tap", "ecapa_spectrogram"]
    settings = {"device": "cpu", "threads": args.threads, "batch": args.batch,
                "crop": args.crop, "seed": 0, "width": args.width}
    report = {"command": protocol.command_line(), "machine": protocol.machine_info(),
              "cpu_flags": cpu_flags(), "settings": settings, "warmup": args.warmup,
              "reps": args.reps, "rows": []}
    for model in args.models:
        # channels_last runs in a process of its own, with fp32 again as its reference:
        # with torch 2.14.1 on CPU its backward has crashed the process (SIGSEGV)
        groups = [["fp32", "bf16"]] if model in ONE_D else [
            ["fp32", "bf16"], ["fp32", "fp32+channels_last", "bf16+channels_last"]]
        if args.compile:
            groups = [["fp32", "fp32+compile"]]
        rows = []
        for index, group in enumerate(groups):
            try:
                result, _ = bench_speed.run_in_fresh_process(
                    time_model, model, group, settings, args.warmup, args.reps)
            except concurrent.futures.process.BrokenProcessPool:
                result = [{"model": model, "variant": v, "crashed": True} for v in group]
            # the second group's fp32 is only the reference of its own ratios
            rows += result if index == 0 else [r for r in result if r["variant"] != "fp32"]
        report["rows"] += rows
        for row in rows:
            print(f"{model:22s} {row['variant']:20s} {_cells(row)}", flush=True)
    report["load_average_at_end"] = protocol.load_average()
    out = args.out or os.path.join(bench_speed.REPO, "benchmarks", "results",
                                   f"precision_cpu_{args.width}" + ("_quick" if args.quick else "")
                                   + ("_compile" if args.compile else ""))
    protocol.write_json(out + ".json", report)
    protocol.write_markdown(out + ".md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
