"""benchmarks/bench_attention.py: attention statistics and the agreement between models."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_attention as bench  # noqa: E402


def test_statistics_split_spread_between_and_within_speakers():
    # speaker a: two different rows; speaker b: the same row twice
    weights = np.array([[1.2, 0.8], [0.8, 1.2], [1.1, 0.9], [1.1, 0.9]])
    stats = bench.attention_statistics(weights, ["a", "a", "b", "b"], sample_rate=4)
    speaker_means = np.array([[1.0, 1.0], [1.1, 0.9]])
    assert stats["between_speaker_std"] == pytest.approx(np.sqrt(speaker_means.var(0).mean()))
    # only speaker a's rows deviate from their speaker mean, by 0.2 in every bin
    assert stats["within_speaker_std"] == pytest.approx(np.sqrt(2 * 0.2 ** 2 / 4))
    assert stats["mean_per_bin"] == pytest.approx([1.05, 0.95])
    assert stats["max_abs_deviation_of_mean"] == pytest.approx(0.05)


def _profile(shape, ripple):
    bins = np.arange(257)
    return list(1 + shape * np.linspace(-0.1, 0.1, 257) + ripple * 0.05 * (-1) ** bins)


def test_agreement_smoothing_compares_band_shapes_not_ripple():
    models = {"rising": {"mean_per_bin": _profile(1, 1)},
              "rising_other_ripple": {"mean_per_bin": _profile(1, -1)},
              "falling": {"mean_per_bin": _profile(-1, 1)}}
    agreement = bench.profile_agreement(models)
    raw, smoothed = np.array(agreement["raw"]), np.array(agreement["smoothed"])
    assert agreement["names"] == ["rising", "rising_other_ripple", "falling"]
    # bin by bin, the opposite ripple hides the common slope; smoothed, it is seen
    assert raw[0, 1] < 0.5
    assert smoothed[0, 1] == pytest.approx(1.0, abs=1e-3)
    assert smoothed[0, 2] == pytest.approx(-1.0, abs=1e-3)
    assert np.allclose(np.diag(smoothed), 1.0)


def test_markdown_lists_agreement_for_several_models():
    stats = bench.attention_statistics(np.array([[1.1, 0.9], [1.0, 1.0]]), ["a", "b"], 4)
    other = dict(stats, mean_per_bin=[0.9, 1.1])
    report = {"command": "cmd", "machine": {"cpu": "cpu", "date": "today"},
              "models": {"one": stats, "two": other}}
    report["agreement"] = bench.profile_agreement(report["models"], sample_rate=4,
                                                  smooth_hz=1)
    text = bench.markdown(report)
    assert "| 1 one | +1.00 | -1.00 |" in text
    assert "| 2 two | -1.00 | +1.00 |" in text


def test_group_agreement_pools_seeds_of_one_configuration():
    agreement = {"names": ["x", "x_s2", "x_s3", "y", "y_s2", "z_single"],
                 "smoothed": np.eye(6).tolist()}
    r = np.array(agreement["smoothed"])
    r[0, 1] = r[1, 0] = 0.9
    r[0, 2] = r[2, 0] = 0.7
    r[1, 2] = r[2, 1] = 0.5
    r[3, 4] = r[4, 3] = -0.2
    r[0, 3] = r[3, 0] = 0.6
    agreement.update(smoothed=r.tolist(), raw=r.tolist(), smooth_hz=500.0)
    summary = bench.group_agreement(agreement)
    assert summary["groups"] == ["x", "y", "z_single"]
    assert summary["within"]["x"] == pytest.approx([0.7, 0.5, 0.9])
    assert summary["within"]["y"] == pytest.approx([-0.2, -0.2, -0.2])
    assert summary["within"]["z_single"] is None  # one run: no pair of seeds
    # x against y: the mean over all 3 x 2 pairs of runs, one of them 0.6
    assert summary["between"][0][1] == pytest.approx(0.1)
    assert summary["between"][1][0] == pytest.approx(0.1)
    assert summary["between"][2][2] is None
    text = "\n".join(bench.agreement_markdown(agreement))
    assert "| 1 x | **+0.70** (+0.50 - +0.90) | +0.10 | +0.00 |" in text
