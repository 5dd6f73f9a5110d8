"""Sort-based verification metrics against a brute-force reference and SpeechBrain."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from speechbrain.utils.metric_stats import EER as sb_eer
from speechbrain.utils.metric_stats import minDCF as sb_min_dcf

from fefa_speechbrain.evaluation.metrics import (
    compute_eer,
    compute_min_dcf,
    det_curve,
    verification_report,
)


# ---------------------------------------------------------------------------
# Brute-force reference: every threshold evaluated by counting, O(n^2).
# ---------------------------------------------------------------------------
def _brute_points(scores, labels):
    """(threshold, FAR, FRR) for every distinct score and for reject-all."""
    scores = [float(s) for s in scores]
    labels = [bool(lab) for lab in labels]
    targets = [s for s, lab in zip(scores, labels) if lab]
    nontargets = [s for s, lab in zip(scores, labels) if not lab]
    with np.errstate(over="ignore"):
        candidates = sorted(set(scores)) + [np.nextafter(max(scores), np.inf)]
    points = []
    for t in candidates:
        far = sum(s >= t for s in nontargets) / len(nontargets)
        frr = sum(s < t for s in targets) / len(targets)
        points.append((t, far, frr))
    return points


def _brute_eer(scores, labels):
    """Crossing of FAR and FRR, interpolated between the adjacent operating points."""
    points = _brute_points(scores, labels)
    for (t0, far0, frr0), (t1, far1, frr1) in zip(points, points[1:]):
        if far1 == frr1:
            return far1, t1
        if far1 < frr1:
            w = (far0 - frr0) / ((far0 - frr0) - (far1 - frr1))
            return far0 + w * (far1 - far0), (1 - w) * t0 + w * t1
    raise AssertionError("FAR and FRR never cross")


def _brute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    best = None
    for t, far, frr in _brute_points(scores, labels):
        cost = (c_miss * p_target * frr + c_fa * (1 - p_target) * far) / norm
        if best is None or cost < best[0]:
            best = (cost, t)
    return best


def _random_trials(seed, n=300, decimals=None):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.5 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)
    return scores, labels


# ---------------------------------------------------------------------------
# Against the brute-force reference
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_matches_brute_force(seed, decimals):
    scores, labels = _random_trials(seed, decimals=decimals)
    eer, threshold = compute_eer(scores, labels)
    ref_eer, ref_threshold = _brute_eer(scores, labels)
    assert eer == pytest.approx(ref_eer, abs=1e-12)
    assert threshold == pytest.approx(ref_threshold, abs=1e-12)
    assert 0.05 < eer < 0.5


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize(
    "p_target, c_miss, c_fa", [(0.01, 1, 1), (0.05, 1, 1), (0.5, 1, 1), (0.3, 10, 2), (0.9, 1, 1)]
)
def test_min_dcf_matches_brute_force(p_target, c_miss, c_fa, decimals):
    scores, labels = _random_trials(7, decimals=decimals)
    got = compute_min_dcf(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    ref = _brute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    assert got[0] == pytest.approx(ref[0], abs=1e-12)
    assert got[1] == ref[1]
    assert 0.0 < got[0] <= 1.0


def test_det_curve_matches_brute_force_with_ties():
    scores, labels = _random_trials(3, n=200, decimals=1)
    fpr, fnr, thresholds = det_curve(scores, labels)
    ref = np.array(_brute_points(scores, labels))
    np.testing.assert_array_equal(thresholds, ref[:, 0])
    np.testing.assert_allclose(fpr, ref[:, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(fnr, ref[:, 2], rtol=0, atol=1e-15)
    assert len(thresholds) == len(np.unique(scores)) + 1
    assert fpr[0] == 1 and fnr[0] == 0 and fpr[-1] == 0 and fnr[-1] == 1
    assert (np.diff(fpr) < 0).any() and (np.diff(fpr) <= 0).all()
    assert (np.diff(fnr) >= 0).all()


# ---------------------------------------------------------------------------
# Small cases by hand
# ---------------------------------------------------------------------------
def test_perfect_separation():
    scores, labels = [0.1, 0.2, 0.3, 0.7, 0.9], [0, 0, 0, 1, 1]
    assert compute_eer(scores, labels) == (0.0, 0.7)
    assert compute_min_dcf(scores, labels) == (0.0, 0.7)


def test_fully_inverted():
    scores, labels = [0.1, 0.2, 0.3, 0.7, 0.9], [1, 1, 0, 0, 0]
    assert compute_eer(scores, labels)[0] == 1.0
    # The best is to reject (or accept) everything: normalized cost exactly 1.
    assert compute_min_dcf(scores, labels)[0] == 1.0
    assert compute_min_dcf(scores, labels, p_target=0.9)[0] == 1.0


def test_known_example_with_tie():
    # thresholds 0.2, 0.5, 0.9, reject-all: FAR 1, .5, 0, 0; FRR 0, 0, .5, 1.
    # FAR - FRR = 1, .5, -.5: crossing half-way between 0.5 and 0.9.
    scores, labels = [0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]
    eer, threshold = compute_eer(scores, labels)
    assert eer == pytest.approx(0.25, abs=1e-15)
    assert threshold == pytest.approx(0.7, abs=1e-15)
    # Normalized costs FRR + 99 FAR: 99, 49.5, 0.5, 1 -> 0.5 at 0.9.
    min_dcf, dcf_threshold = compute_min_dcf(scores, labels, p_target=0.01)
    assert min_dcf == pytest.approx(0.5, abs=1e-12)
    assert dcf_threshold == 0.9


def test_all_scores_tied():
    # Only accept-all (FAR 1, FRR 0) and reject-all (FAR 0, FRR 1): they cross at 0.5.
    eer, threshold = compute_eer([3.0] * 5, [1, 0, 1, 0, 0])
    assert eer == 0.5
    assert 3.0 < threshold <= np.nextafter(3.0, np.inf)
    assert compute_min_dcf([3.0] * 5, [1, 0, 1, 0, 0])[0] == 1.0


def test_ties_move_together():
    # A target and a non-target at the same score are never separated.
    fpr, fnr, thresholds = det_curve([1.0, 1.0], [1, 0])
    np.testing.assert_array_equal(fpr, [1.0, 0.0])
    np.testing.assert_array_equal(fnr, [0.0, 1.0])
    assert thresholds[0] == 1.0 and thresholds[1] > 1.0


def test_order_invariance():
    scores, labels = _random_trials(11, n=500, decimals=1)
    perm = np.random.default_rng(0).permutation(len(scores))
    assert compute_eer(scores, labels) == compute_eer(scores[perm], labels[perm])
    for p in (0.01, 0.05):
        assert compute_min_dcf(scores, labels, p) == compute_min_dcf(scores[perm], labels[perm], p)
    assert verification_report(scores, labels) == verification_report(scores[perm], labels[perm])


def test_input_types_agree():
    scores, labels = _random_trials(5, n=100)
    scores32 = scores.astype(np.float32)
    ref = compute_eer(scores32, labels)
    assert compute_eer(torch.from_numpy(scores32), torch.from_numpy(labels)) == ref
    assert compute_eer(list(scores32), labels.astype(int)) == ref
    assert compute_eer(scores32, labels.astype(np.float64)) == ref


def test_verification_report_consistent():
    scores, labels = _random_trials(9, n=400)
    report = verification_report(scores, labels, p_targets=(0.01, 0.05, 0.001))
    assert (report["eer"], report["eer_threshold"]) == compute_eer(scores, labels)
    for p in (0.01, 0.05, 0.001):
        key = f"min_dcf_{p:g}"
        assert (report[key], report[key + "_threshold"]) == compute_min_dcf(scores, labels, p)
    assert report["n_target"] == int(labels.sum())
    assert report["n_nontarget"] == int((~labels).sum())
    assert all(type(v) in (float, int) for v in report.values())


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
def test_length_mismatch():
    with pytest.raises(ValueError, match="3 scores, 2 labels"):
        compute_eer([0.1, 0.2, 0.3], [0, 1])


def test_single_class():
    with pytest.raises(ValueError, match="no target"):
        compute_eer([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="no non-target"):
        compute_min_dcf([0.1, 0.2], [True, True])


def test_non_finite_scores():
    with pytest.raises(ValueError, match=r"2 non-finite.*index 1"):
        compute_eer([0.1, np.nan, 0.3, np.inf], [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"1 non-finite.*-inf at index 0"):
        det_curve(torch.tensor([-float("inf"), 0.0]), torch.tensor([1, 0]))


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match=r"1 label\(s\).*2 at index 2"):
        compute_eer([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        compute_eer(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="c_miss"):
        compute_min_dcf([0.1, 0.2], [0, 1], c_miss=0)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------
@st.composite
def _trial_lists(draw):
    n = draw(st.integers(min_value=2, max_value=40))
    pool = draw(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=n)
    )
    scores = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))  # many ties
    labels = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    target = draw(st.integers(0, n - 1))
    non_target = draw(st.integers(0, n - 2))
    non_target += non_target >= target
    labels[target], labels[non_target] = True, False
    return scores, labels


@settings(max_examples=150, deadline=None)
@given(_trial_lists(), st.sampled_from([0.01, 0.05, 0.5, 0.95]))
def test_properties_against_brute_force(trials, p_target):
    scores, labels = trials
    assert any(labels) and not all(labels)
    eer, threshold = compute_eer(scores, labels)
    ref_eer, _ = _brute_eer(scores, labels)
    assert 0.0 <= eer <= 1.0
    assert eer == pytest.approx(ref_eer, abs=1e-12)

    points = _brute_points(scores, labels)
    assert max(min(far, frr) for _, far, frr in points) <= eer + 1e-12
    assert eer <= min(max(far, frr) for _, far, frr in points) + 1e-12
    # The returned threshold realizes the point just past the crossing.
    targets = [s for s, lab in zip(scores, labels) if lab]
    nontargets = [s for s, lab in zip(scores, labels) if not lab]
    far_at = sum(s >= threshold for s in nontargets) / len(nontargets)
    frr_at = sum(s < threshold for s in targets) / len(targets)
    assert far_at - 1e-12 <= eer <= frr_at + 1e-12

    min_dcf, dcf_threshold = compute_min_dcf(scores, labels, p_target=p_target)
    ref_dcf, ref_threshold = _brute_min_dcf(scores, labels, p_target)
    assert 0.0 <= min_dcf <= 1.0 + 1e-12
    assert min_dcf == pytest.approx(ref_dcf, abs=1e-12)
    assert dcf_threshold == ref_threshold


# ---------------------------------------------------------------------------
# SpeechBrain's definitions
# ---------------------------------------------------------------------------
def _split(scores, labels):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.bool)
    return scores[labels], scores[~labels]


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_relation_to_speechbrain(decimals):
    """SpeechBrain: (FAR + FRR) / 2 at the point minimizing |FAR - FRR|, accept > t.

    Every SpeechBrain operating point is one of ours (all but accept-all). Ours is the
    interpolated crossing, which lies between FAR and FRR at SpeechBrain's point.
    """
    scores, labels = _random_trials(21, n=200, decimals=decimals)
    scores = scores.astype(np.float32)
    sb_value, sb_threshold = sb_eer(*_split(scores, labels))
    fpr, fnr, thresholds = det_curve(scores, labels)
    gap = np.abs(fpr - fnr)[1:]
    candidates = np.flatnonzero(gap <= gap.min() + 1e-6) + 1
    means = (fpr[candidates] + fnr[candidates]) / 2
    match = candidates[np.argmin(np.abs(means - sb_value))]
    assert sb_value == pytest.approx((fpr[match] + fnr[match]) / 2, abs=1e-6)
    # SpeechBrain's "accept > t" selects the same trials as our "accept >= thresholds[match]".
    assert (scores > sb_threshold).sum() == (scores >= thresholds[match]).sum()

    eer, _ = compute_eer(scores, labels)
    low, high = sorted((fpr[match], fnr[match]))
    assert low - 1e-12 <= eer <= high + 1e-12
    assert abs(eer - sb_value) <= (high - low) / 2 + 1e-6


def test_eer_equals_speechbrain_when_rates_cross_at_a_point():
    scores = np.array([0.1, 0.3, 0.5, 0.7, 0.2, 0.9], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1], dtype=bool)
    sb_value, _ = sb_eer(*_split(scores, labels))
    eer, _ = compute_eer(scores, labels)
    fpr, fnr, _ = det_curve(scores, labels)
    assert (fpr == fnr).any()
    assert eer == pytest.approx(sb_value, abs=1e-7)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5, 0.9])
@pytest.mark.parametrize("decimals", [None, 1])
def test_min_dcf_relation_to_speechbrain(p_target, decimals):
    """SpeechBrain's minDCF is unnormalized and omits accept-all (cost c_fa * (1 - p)).

    So ``ours * norm == min(speechbrain, c_fa * (1 - p))``, up to SpeechBrain's float32.
    At p_target < 0.5 the accept-all point never wins, so ``ours == speechbrain / norm``.
    """
    c_miss, c_fa = 1.0, 1.0
    scores, labels = _random_trials(33, n=250, decimals=decimals)
    sb_value, _ = sb_min_dcf(*_split(scores, labels), c_miss=c_miss, c_fa=c_fa, p_target=p_target)
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    ours, _ = compute_min_dcf(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    assert ours * norm == pytest.approx(min(sb_value, c_fa * (1 - p_target)), rel=1e-5)
    if p_target < 0.5:
        assert ours == pytest.approx(sb_value / norm, rel=1e-5)


def test_speechbrain_min_dcf_misses_accept_all():
    # Targets scored low: with p_target = 0.9 accepting everything is the best decision.
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    labels = np.array([1, 1, 0, 0], dtype=bool)
    sb_value, _ = sb_min_dcf(*_split(scores, labels), p_target=0.9)
    ours, threshold = compute_min_dcf(scores, labels, p_target=0.9)
    # Ours: accept-all costs 0.1 * FAR = 0.1, normalized by min(0.9, 0.1) -> 1.
    assert ours == pytest.approx(1.0)
    assert threshold == 0.1
    # SpeechBrain's best is "accept > 0.1": 0.9 * FRR 0.5 + 0.1 * FAR 1 = 0.55.
    assert sb_value == pytest.approx(0.55)
