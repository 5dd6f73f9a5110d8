"""Paired FEFA-minus-baseline differences of a noise-robustness run, per condition.

Reads the ``noise_robustness.json`` written by the recipe's ``noise_robustness.py`` for
models named ``<a>_s<seed>`` and ``<b>_s<seed>`` (e.g. ``fefa_s1,none_s1,fefa_s2,...``),
pairs them by seed and reports, for every noise kind and SNR, the EER of each pair and the
mean and standard deviation over seeds of the difference ``a - b`` (negative: ``a`` is
better). Writes ``<out>.md`` and ``<out>.json``.

Example
-------
python benchmarks/bench_noise_pairs.py RUNS/noise/ecapa128_3seeds/noise_robustness.json \
    --out benchmarks/results/noise_pairs_ecapa128
"""

import argparse
import json
import re
from collections import defaultdict

import protocol


def paired_differences(rows, first="fefa", second="none"):
    """{(kind, snr): {"pairs": [(seed, eer_first, eer_second)], "mean", "std"}} in points."""
    by_model = defaultdict(dict)
    for row in rows:
        match = re.fullmatch(r"(.+)_s(\d+)", row["model"])
        if match:
            by_model[(match.group(1), int(match.group(2)))][(row["kind"], str(row["snr_db"]))] = row["eer"]
    seeds = sorted({seed for name, seed in by_model if name == first}
                   & {seed for name, seed in by_model if name == second})
    conditions = list(dict.fromkeys(key for seed in seeds for key in by_model[(first, seed)]))
    table = {}
    for condition in conditions:
        pairs = [(seed, 100 * by_model[(first, seed)][condition], 100 * by_model[(second, seed)][condition])
                 for seed in seeds if condition in by_model[(second, seed)]]
        mean, std = protocol.mean_std([a - b for _, a, b in pairs])
        table[condition] = {"pairs": pairs, "mean": mean, "std": std}
    return seeds, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="noise_robustness.json of the recipe's noise_robustness.py")
    parser.add_argument("--first", default="fefa")
    parser.add_argument("--second", default="none")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as fin:
        rows = json.load(fin)["rows"]
    seeds, table = paired_differences(rows, args.first, args.second)
    header = ["noise", "SNR (dB)"] + [f"s{seed}: {args.first} / {args.second}" for seed in seeds]
    header += [f"{args.first} - {args.second} (points, mean ± sd)"]
    lines = []
    for (kind, snr), cell in table.items():
        pairs = [f"{a:.2f} / {b:.2f}" for _, a, b in cell["pairs"]]
        lines.append([kind, snr] + pairs + [f"{cell['mean']:+.2f} ± {cell['std']:.2f}"])
    text = f"Command: `{protocol.command_line()}`\n\n" + protocol.markdown_table(header, lines)
    protocol.write_markdown(args.out + ".md", text)
    protocol.write_json(args.out + ".json", {
        "command": protocol.command_line(), "source": args.results, "seeds": seeds,
        "conditions": [{"kind": k, "snr_db": s, **c} for (k, s), c in table.items()]})
    print(text)


if __name__ == "__main__":
    main()
