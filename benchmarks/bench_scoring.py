"""Times the sort-based verification metrics against SpeechBrain's EER and minDCF.

Every measurement runs in a fresh process (multiprocessing "spawn"), which generates its
own random trials, so that its peak memory is its own: the reported memory is the rise
of the process's peak resident set size (``resource.getrusage(...).ru_maxrss``) during
the timed calls, over the resident memory once the data exist. The time is the best
of ``--repeats`` calls for ours and a single call for SpeechBrain (quadratic).
Rerunning overwrites ``--out`` in one step (temporary file, then ``os.replace``).

Trials: ``--target-fraction`` of them are targets with scores ~ N(3, 1), the others
non-targets with scores ~ N(0, 1) (an EER of about 7%).

Example
-------
python benchmarks/bench_scoring.py --trials 1000000 --sb-trials 20000 \\
    --out benchmarks/results/scoring.json
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time

import numpy as np

# (implementation, metric): what each measurement runs.
TASKS_AT_SB_SIZE = (
    ("fefa_speechbrain", "eer"),
    ("fefa_speechbrain", "min_dcf"),
    ("speechbrain", "eer"),
    ("speechbrain", "min_dcf"),
)
TASKS_AT_FULL_SIZE = (
    ("fefa_speechbrain", "eer"),
    ("fefa_speechbrain", "min_dcf"),
    ("fefa_speechbrain", "report"),
)


def make_trials(n_trials, target_fraction, seed):
    """Random scores (float64) and boolean labels, ``target_fraction`` targets."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n_trials) < target_fraction
    scores = rng.normal(size=n_trials) + 3.0 * labels
    return scores, labels


def _peak_rss_mib():
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib():
    """Resident set size now, in MiB (from /proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        return _peak_rss_mib()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _callable_for(implementation, metric, scores, labels, p_target):
    """Returns (a function of no argument returning the metric value, its description)."""
    if implementation == "fefa_speechbrain":
        from fefa_speechbrain.evaluation.metrics import compute_eer, compute_min_dcf, verification_report

        if metric == "eer":
            return lambda: compute_eer(scores, labels)[0]
        if metric == "min_dcf":
            return lambda: compute_min_dcf(scores, labels, p_target=p_target)[0]
        return lambda: verification_report(scores, labels, p_targets=(0.01, 0.05))["eer"]

    import torch
    from speechbrain.utils.metric_stats import EER, minDCF

    scores32 = torch.from_numpy(scores.astype(np.float32))
    positives, negatives = scores32[torch.from_numpy(labels)], scores32[~torch.from_numpy(labels)]
    if metric == "eer":
        return lambda: EER(positives, negatives)[0]
    norm = min(p_target, 1.0 - p_target)  # SpeechBrain's minDCF is not normalized
    return lambda: minDCF(positives, negatives, p_target=p_target)[0] / norm


def measure(implementation, metric, n_trials, target_fraction, seed, p_target, repeats):
    """Runs one measurement (meant for a fresh process); returns a result dict."""
    scores, labels = make_trials(n_trials, target_fraction, seed)
    run = _callable_for(implementation, metric, scores, labels, p_target)
    before = _current_rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - start)
    return {
        "implementation": implementation,
        "metric": metric,
        "trials": n_trials,
        "seconds": min(times),
        "repeats": repeats,
        "peak_extra_mib": max(_peak_rss_mib() - before, 0.0),
        "value": float(value),
    }


def measure_in_fresh_process(*args):
    """Runs :func:`measure` in a new spawned process, so that its memory peak is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, *args).result()


def machine_info():
    """A short description of where the benchmark ran."""
    import speechbrain
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
    }


def markdown_table(results):
    """The results as a markdown table, with SpeechBrain's time over ours at equal size."""
    ours = {
        (r["metric"], r["trials"]): r["seconds"]
        for r in results
        if r["implementation"] == "fefa_speechbrain"
    }
    lines = [
        "| implementation | metric | trials | time (s) | peak extra memory (MiB) | value "
        "| ours faster by |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        speedup = ""
        if r["implementation"] == "speechbrain" and (r["metric"], r["trials"]) in ours:
            speedup = f"{r['seconds'] / ours[(r['metric'], r['trials'])]:.0f}x"
        lines.append(
            f"| {r['implementation']} | {r['metric']} | {r['trials']:,} | {r['seconds']:.4f} "
            f"| {r['peak_extra_mib']:.1f} | {r['value']:.6f} | {speedup} |"
        )
    return "\n".join(lines)


def write_json_atomically(data, path):
    """Writes ``data`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=".scoring-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as tmp:
            json.dump(data, tmp, indent=2)
            tmp.write("\n")
        os.chmod(tmp_path, 0o644)  # mkstemp creates it readable by the owner only
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1_000_000, help="trials for ours alone")
    parser.add_argument(
        "--sb-trials", type=int, default=20_000, help="trials for ours vs SpeechBrain"
    )
    parser.add_argument("--target-fraction", type=float, default=0.5)
    parser.add_argument("--p-target", type=float, default=0.01, help="prior for minDCF")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/scoring.json")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.sb_trials < 2:
        parser.error("--trials and --sb-trials must be at least 2")
    if not 0.0 < args.target_fraction < 1.0:
        parser.error("--target-fraction must be in (0, 1)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    plan = [(impl, metric, args.sb_trials) for impl, metric in TASKS_AT_SB_SIZE]
    plan += [(impl, metric, args.trials) for impl, metric in TASKS_AT_FULL_SIZE]
    results = []
    for implementation, metric, n_trials in plan:
        repeats = args.repeats if implementation == "fefa_speechbrain" else 1
        print(f"running {implementation} {metric} on {n_trials:,} trials ...", file=sys.stderr)
        results.append(
            measure_in_fresh_process(
                implementation,
                metric,
                n_trials,
                args.target_fraction,
                args.seed,
                args.p_target,
                repeats,
            )
        )
    table = markdown_table(results)
    print(table)
    write_json_atomically(
        {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "config": vars(args),
            "machine": machine_info(),
            "min_dcf_note": "normalized by min(p_target, 1 - p_target) for both implementations",
            "results": results,
        },
        args.out,
    )
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
