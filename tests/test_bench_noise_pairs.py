"""benchmarks/bench_noise_pairs.py: pairing by seed across noise-robustness result files."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_noise_pairs as bench  # noqa: E402


def _write(path, rows):
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    return str(path)


def _row(model, kind, snr, eer):
    return {"model": model, "kind": kind, "snr_db": snr, "eer": eer}


def test_models_from_two_runs_pair_by_seed(tmp_path):
    first = _write(tmp_path / "a.json", [_row("fefalr10_s1", "gaussian", 5, 0.10),
                                         _row("fefalr10_s2", "gaussian", 5, 0.20)])
    second = _write(tmp_path / "b.json", [_row("none_s1", "gaussian", 5, 0.12),
                                          _row("none_s2", "gaussian", 5, 0.21),
                                          _row("none_s3", "gaussian", 5, 0.30)])
    seeds, table = bench.paired_differences(bench.join_rows([first, second]), "fefalr10", "none")
    assert seeds == [1, 2]  # seed 3 has no fefalr10 model
    cell = table[("gaussian", "5")]
    assert [seed for seed, _, _ in cell["pairs"]] == [1, 2]
    assert cell["mean"] == pytest.approx(-1.5)  # (-2 - 1) / 2 points
    assert cell["test"]["lower"] == 2 and cell["test"]["p_sign"] == pytest.approx(0.5)


def test_the_table_states_each_conditions_evidence(tmp_path, capsys):
    source = _write(tmp_path / "a.json", [_row("fefa_s1", "babble", 10, 0.30),
                                          _row("none_s1", "babble", 10, 0.25),
                                          _row("fefa_s2", "babble", 10, 0.33),
                                          _row("none_s2", "babble", 10, 0.30)])
    bench.main([source, "--out", str(tmp_path / "pairs")])
    table = (tmp_path / "pairs.md").read_text(encoding="utf-8")
    # +5 and +3 points: mean +4, sd 1.41, t = 4.0 with 1 df (p = 0.16), FEFA lower in none
    assert "| babble | 10 | 30.00 / 25.00 | 33.00 / 30.00 | +4.00 ± 1.41 | lower in 0 of 2 pairs; " \
           "paired t = 4.00 (1 df), p = 0.16; sign test p = 0.50 |" in table


def test_a_model_scored_in_two_files_is_refused_with_both_names(tmp_path):
    rows = [_row("none_s1", "babble", 10, 0.12)]
    first, second = _write(tmp_path / "a.json", rows), _write(tmp_path / "b.json", rows)
    with pytest.raises(ValueError, match=r"b\.json.*none_s1.*a\.json"):
        bench.join_rows([first, second])
