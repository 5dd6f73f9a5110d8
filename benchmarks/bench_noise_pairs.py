"""Paired FEFA-minus-baseline differences of a noise-robustness run, per condition.

Reads the ``noise_robustness.json`` written by the recipe's ``noise_robustness.py`` for
models named ``<a>_s<seed>`` and ``<b>_s<seed>`` (e.g. ``fefa_s1,none_s1,fefa_s2,...``),
pairs them by seed and reports, for every noise kind and SNR, the EER of each pair and the
mean and standard deviation over seeds of the difference ``a - b`` (negative: ``a`` is
better) with a paired t-test and a sign test. Several result files may be given: their
rows are joined, so models scored in separate runs pair up (the noise of a file depends
only on the run seed, the condition and the file's samples, so runs with the same seed
add the same noise). A model and condition found in two files is an error. Writes
``<out>.md`` and ``<out>.json``.

Example
-------
python benchmarks/bench_noise_pairs.py RUNS/noise/ecapa128_3seeds/noise_robustness.json \
    --out benchmarks/results/noise_pairs_ecapa128
python benchmarks/bench_noise_pairs.py RUNS/noise/fefalr10/noise_robustness.json \
    RUNS/noise/ecapa128_3seeds/noise_robustness.json --first fefalr10 --out OUT
"""

import argparse
import json
from collections import defaultdict

import protocol


def paired_differences(rows, first="fefa", second="none"):
    """{(kind, snr): {"pairs": [(seed, eer_first, eer_second)], "mean", "std", "test"}} in
    points; ``test`` is :func:`protocol.paired_test` of the differences."""
    by_model = defaultdict(dict)
    for row in rows:
        name, seed = protocol.split_seed(row["model"])
        if seed is not None:
            by_model[(name, seed)][(row["kind"], str(row["snr_db"]))] = row["eer"]
    seeds = protocol.common_seeds(by_model, first, second)
    conditions = list(dict.fromkeys(key for seed in seeds for key in by_model[(first, seed)]))
    table = {}
    for condition in conditions:
        pairs = [(seed, 100 * by_model[(first, seed)][condition], 100 * by_model[(second, seed)][condition])
                 for seed in seeds if condition in by_model[(second, seed)]]
        test = protocol.paired_test([a - b for _, a, b in pairs])
        table[condition] = {"pairs": pairs, "mean": test["mean"], "std": test["sd"], "test": test}
    return seeds, table


def join_rows(paths):
    """The rows of several ``noise_robustness.json`` files; a repeated (model, kind, SNR)
    row raises ``ValueError`` naming both files."""
    rows, seen = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as fin:
            for row in json.load(fin)["rows"]:
                key = (row["model"], row["kind"], str(row["snr_db"]))
                if key in seen:
                    raise ValueError(f"{path}: model {key[0]!r}, {key[1]} at {key[2]} dB is "
                                     f"also in {seen[key]}; give each model once")
                seen[key] = path
                rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+",
                        help="noise_robustness.json files of the recipe's noise_robustness.py")
    parser.add_argument("--first", default="fefa")
    parser.add_argument("--second", default="none")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args(argv)
    rows = join_rows(args.results)
    seeds, table = paired_differences(rows, args.first, args.second)
    header = ["noise", "SNR (dB)"] + [f"s{seed}: {args.first} / {args.second}" for seed in seeds]
    header += [f"{args.first} - {args.second} (points, mean ± sd)", f"{args.first}: evidence"]
    lines = []
    for (kind, snr), cell in table.items():
        pairs = [f"{a:.2f} / {b:.2f}" for _, a, b in cell["pairs"]]
        lines.append([kind, snr] + pairs + [f"{cell['mean']:+.2f} ± {cell['std']:.2f}",
                                            protocol.evidence(cell["test"])])
    text = f"Command: `{protocol.command_line()}`\n\n" + protocol.markdown_table(header, lines)
    protocol.write_markdown(args.out + ".md", text)
    protocol.write_json(args.out + ".json", {
        "command": protocol.command_line(), "source": args.results, "seeds": seeds,
        "conditions": [{"kind": k, "snr_db": s, **c} for (k, s), c in table.items()]})
    print(text)


if __name__ == "__main__":
    main()
