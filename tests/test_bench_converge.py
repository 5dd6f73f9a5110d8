"""benchmarks/bench_converge.py: commands per seed and runs paired by seed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_converge as bench  # noqa: E402


def _record(name, error, eer):
    return {"name": name, "epochs": [[1, 2.0, 2.0, error + 0.5], [2, 1.0, 1.0, error]],
            "dev_eer": eer / 2, "eer": eer, "min_dcf_0.01": 0.5}


def test_runs_pair_by_seed_and_unpaired_seeds_are_left_out():
    records = [_record("cell_single", 0.10, 0.130), _record("cell_none", 0.20, 0.120),
               _record("cell_single:2", 0.15, 0.100), _record("cell_none:2", 0.15, 0.140),
               _record("cell_none:3", 0.30, 0.300), _record("other_single", 0.0, 0.0)]
    result = bench.paired(records, "cell_single", "cell_none")
    assert result["seeds"] == [1, 2]
    errors = [values[0] for _, values in result["rows"]]
    assert errors == [(0.10, 0.20), (0.15, 0.15)]  # the best epoch's error, not the first
    mean, sd = result["differences"]["test EER"]  # (+1 and -4 points)
    assert mean == pytest.approx(-1.5) and sd == pytest.approx(5 / 2 ** 0.5)
    table = bench.pairs_markdown(result)
    assert "(2 seeds)" in table and "-1.50 ± 3.54" in table


def test_a_seed_in_the_name_reaches_the_command_and_the_folder(tmp_path):
    args = bench.argparse.Namespace(data_folder="/data", runs_dir=str(tmp_path), seed=1,
                                    extra=[], threads=1)
    train, _, folder = bench.commands("vggm_conv_single:3", args)
    assert "--seed=3" in train and folder == str(tmp_path / "vggm_conv_single_s3")
    assert bench.seed_of("vggm_conv_single") == 1 and bench.seed_of("x:7") == 7


def test_one_pair_gets_no_spread():
    result = bench.paired([_record("a", 0.1, 0.1), _record("b", 0.2, 0.2)], "a", "b")
    lines = bench.pairs_markdown(result).splitlines()
    last = [line for line in lines if line.startswith("|")][-1]
    assert last.startswith("| a - b |") and "±" not in last and "-10.00" in last
    assert lines[-1] == "Test EER: a lower in 1 of 1 pair; sign test p = 1.00."  # no t from one pair


def test_pairs_without_report_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--pairs", "a:b"])
    assert "--report" in capsys.readouterr().err


def test_pairs_state_their_evidence_and_pools_join_pairings():
    records = [_record("a", 0.1, 0.10), _record("b", 0.1, 0.11),
               _record("a:2", 0.1, 0.10), _record("b:2", 0.1, 0.12),
               _record("c", 0.1, 0.15), _record("d", 0.1, 0.12)]
    table = bench.pairs_markdown(bench.paired(records, "a", "b"))
    # -1 and -2 points: t = -1.5 / (0.707 / sqrt 2) = -3.0 with 1 df, p = 0.205; sign p = 0.5
    assert table.endswith("Test EER: a lower in 2 of 2 pairs; paired t = -3.00 (1 df), "
                          "p = 0.20; sign test p = 0.50.")
    [pool] = bench.pooled(records, {"all": ["a:b", "c:d"]})
    test = pool["tests"]["test EER"]  # -1, -2 and +3 points
    assert test["n"] == 3 and test["lower"] == 2
    assert test["mean"] == pytest.approx(0.0) and test["t"] == pytest.approx(0.0)
    assert pool["tests"]["best validation error"]["mean"] == pytest.approx(0.0)
    row = bench.pools_markdown([pool]).splitlines()[-1]
    assert row.startswith("| all | a:b, c:d | 3 | +0.000 ± 0.000; lower in 0 of 3 pairs |")
    assert ("| +0.00 ± 2.65; lower in 2 of 3 pairs; paired t = 0.00 (2 df), p = 1.00; "
            "sign test p = 1.00 |") in row
    with pytest.raises(ValueError, match="pool 'none'"):
        bench.pooled(records, {"none": ["a:e"]})


def test_a_malformed_pool_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--report", "--pool", "cnn=a"])
    assert "NAME=FIRST:SECOND" in capsys.readouterr().err
