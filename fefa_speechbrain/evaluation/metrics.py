"""Speaker-verification metrics computed by sorting: O(n log n) time, O(n) memory.

SpeechBrain's ``utils.metric_stats.minDCF`` builds a thresholds x trials matrix and its
``EER`` loops over thresholds in Python: both are quadratic in the number of trials.
Here every operating point comes from one sort and two cumulative sums, so a million
trials take well under a second.

Details: ``docs/reference.md`` (fefa_speechbrain.evaluation.metrics).
"""

import numpy as np
import torch


def _as_numpy(values):
    """Converts a numpy array, torch tensor or sequence to a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_trials(scores, labels):
    """Validates and converts scores and labels.

    Returns
    -------
    scores : numpy.ndarray
        float64, 1-D, finite.
    labels : numpy.ndarray
        bool, 1-D, True for target trials.
    """
    scores = _as_numpy(scores)
    labels = _as_numpy(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D; got scores of shape {scores.shape} "
            f"and labels of shape {labels.shape}"
        )
    if len(scores) != len(labels):
        raise ValueError(
            f"scores and labels differ in length: {len(scores)} scores, {len(labels)} labels"
        )
    try:
        scores = scores.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"scores must be numbers, got dtype {scores.dtype}") from err
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"scores contain {len(bad)} non-finite value(s) (NaN or inf); "
            f"the first is {scores[bad[0]]} at index {bad[0]}"
        )
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iuf":
            raise ValueError(f"labels must be 0/1 or bool, got dtype {labels.dtype}")
        wrong = np.flatnonzero((labels != 0) & (labels != 1))
        if len(wrong):
            raise ValueError(
                f"labels must be 0/1 or bool; {len(wrong)} label(s) are not, "
                f"the first is {labels[wrong[0]]} at index {wrong[0]}"
            )
        labels = labels == 1
    n_target = int(labels.sum())
    if n_target == 0:
        raise ValueError("labels contain no target trial (label 1); EER and minDCF need both kinds")
    if n_target == len(labels):
        raise ValueError(
            "labels contain no non-target trial (label 0); EER and minDCF need both kinds"
        )
    return scores, labels


def _operating_points(scores, labels):
    """Error rates at every distinct threshold, from one sort (inputs already checked).

    Returns
    -------
    far : numpy.ndarray
        False-acceptance rate per operating point, falling from 1 to 0.
    frr : numpy.ndarray
        False-rejection rate per operating point, rising from 0 to 1.
    thresholds : numpy.ndarray
        Ascending: the distinct scores, then the reject-all threshold.
    """
    order = np.argsort(scores)
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    n_trials = len(sorted_scores)
    n_target = int(sorted_labels.sum())
    n_nontarget = n_trials - n_target

    # Index of the first trial of each run of equal scores, then the end (reject all).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    cut = np.append(starts, n_trials)
    targets_below = np.r_[0, np.cumsum(sorted_labels, dtype=np.int64)][cut]
    nontargets_below = cut - targets_below

    frr = targets_below / n_target
    far = (n_nontarget - nontargets_below) / n_nontarget
    with np.errstate(over="ignore"):  # inf if the largest score is the largest float
        reject_all = np.nextafter(sorted_scores[-1], np.inf)
    thresholds = np.append(sorted_scores[starts], reject_all)
    return far, frr, thresholds


def _eer_from_points(far, frr, thresholds):
    """EER and its threshold where the FAR and FRR curves cross (see module docstring)."""
    diff = far - frr
    k = int(np.argmax(diff <= 0))  # the first point where FRR has caught up with FAR
    if diff[k] == 0:
        return float(far[k]), float(thresholds[k])
    weight = diff[k - 1] / (diff[k - 1] - diff[k])
    eer = far[k - 1] + weight * (far[k] - far[k - 1])
    threshold = (1.0 - weight) * thresholds[k - 1] + weight * thresholds[k]
    # Rounding must not move the threshold onto the previous point (adjacent floats).
    with np.errstate(over="ignore"):  # only past the largest float: inf, as reject-all
        above_previous = np.nextafter(thresholds[k - 1], np.inf)
    threshold = np.clip(threshold, above_previous, thresholds[k])
    return float(eer), float(threshold)


def _check_costs(p_target, c_miss, c_fa):
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got c_miss={c_miss}, c_fa={c_fa}")


def _min_dcf_from_points(far, frr, thresholds, p_target, c_miss, c_fa):
    """Normalized minimum detection cost and its threshold (see module docstring)."""
    _check_costs(p_target, c_miss, c_fa)
    cost = c_miss * p_target * frr + c_fa * (1.0 - p_target) * far
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    best = int(np.argmin(cost))
    return float(cost[best] / norm), float(thresholds[best])


def det_curve(scores, labels):
    """Error rates at every distinct threshold (the points of a DET or ROC curve).

    Arguments
    ---------
    scores : array-like
        1-D finite scores, higher meaning "more likely the same speaker".
    labels : array-like
        1-D, 1/True for target trials and 0/False for non-target trials.

    Returns
    -------
    fpr : numpy.ndarray
        False-acceptance rate at each threshold, from 1 down to 0.
    fnr : numpy.ndarray
        False-rejection (miss) rate at each threshold, from 0 up to 1.
    thresholds : numpy.ndarray
        Ascending: every distinct score (accept ``score >= threshold``) and, last, the
        smallest float above the largest score, which rejects everything.

    Example
    -------
    >>> fpr, fnr, thr = det_curve([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1])
    >>> fpr
    array([1. , 0.5, 0. , 0. ])
    >>> fnr
    array([0. , 0. , 0.5, 1. ])
    >>> thr[:3]
    array([0.1, 0.4, 0.8])
    """
    return _operating_points(*_check_trials(scores, labels))


def compute_eer(scores, labels):
    """Equal error rate: where FAR and FRR cross (interpolated; see the module docstring).

    Arguments
    ---------
    scores : array-like
        1-D finite scores (numpy or torch), higher meaning "more likely the same speaker".
    labels : array-like
        1-D, 1/True for target trials and 0/False for non-target trials.

    Returns
    -------
    eer : float
        In [0, 1].
    threshold : float
        The decision threshold (accept ``score >= threshold``) at the crossing.

    Example
    -------
    >>> compute_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    (0.0, 0.8)
    >>> compute_eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0]
    1.0
    >>> compute_eer([0.1, 0.3, 0.5, 0.7], [0, 1, 0, 1])
    (0.5, 0.5)
    """
    return _eer_from_points(*det_curve(scores, labels))


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalized minimum detection cost function.

    ``min_t [c_miss * p_target * FRR(t) + c_fa * (1 - p_target) * FAR(t)]`` divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``: 0 for perfect separation, at most
    1 (the cost of always rejecting or always accepting, whichever is cheaper).

    Arguments
    ---------
    scores : array-like
        1-D finite scores (numpy or torch).
    labels : array-like
        1-D, 1/True for target trials and 0/False for non-target trials.
    p_target : float
        Prior probability of a target trial, in (0, 1).
    c_miss : float
        Cost of a false rejection.
    c_fa : float
        Cost of a false acceptance.

    Returns
    -------
    min_dcf : float
        The normalized minimum cost, in [0, 1].
    threshold : float
        The threshold reaching it (accept ``score >= threshold``); the lowest one on ties.

    Example
    -------
    >>> compute_min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    (0.0, 0.8)
    >>> round(compute_min_dcf([0.1, 0.3, 0.5, 0.7], [0, 1, 0, 1], p_target=0.5)[0], 6)
    0.5
    """
    far, frr, thresholds = det_curve(scores, labels)
    return _min_dcf_from_points(far, frr, thresholds, p_target, c_miss, c_fa)


def verification_report(scores, labels, p_targets=(0.01, 0.05)):
    """EER, normalized minDCF at several priors and trial counts, from a single sort.

    Arguments
    ---------
    scores, labels : array-like
        As in :func:`compute_min_dcf`.
    p_targets : sequence of float
        Target priors for minDCF (with c_miss = c_fa = 1).

    Returns
    -------
    dict
        ``eer``, ``eer_threshold``, then for each prior ``p`` (formatted with ``{p:g}``)
        ``min_dcf_<p>`` and ``min_dcf_<p>_threshold``, then ``n_target`` and
        ``n_nontarget``. Plain Python floats and ints (JSON-serializable).

    Example
    -------
    >>> report = verification_report([0.1, 0.3, 0.5, 0.7], [0, 1, 0, 1])
    >>> sorted(report)  # doctest: +NORMALIZE_WHITESPACE
    ['eer', 'eer_threshold', 'min_dcf_0.01', 'min_dcf_0.01_threshold',
     'min_dcf_0.05', 'min_dcf_0.05_threshold', 'n_nontarget', 'n_target']
    >>> report["eer"], report["n_target"], report["n_nontarget"]
    (0.5, 2, 2)
    """
    scores, labels = _check_trials(scores, labels)
    far, frr, thresholds = _operating_points(scores, labels)
    eer, eer_threshold = _eer_from_points(far, frr, thresholds)
    report = {"eer": eer, "eer_threshold": eer_threshold}
    for p_target in p_targets:
        min_dcf, threshold = _min_dcf_from_points(far, frr, thresholds, p_target, 1.0, 1.0)
        report[f"min_dcf_{p_target:g}"] = min_dcf
        report[f"min_dcf_{p_target:g}_threshold"] = threshold
    n_target = int(labels.sum())
    report["n_target"] = n_target
    report["n_nontarget"] = len(labels) - n_target
    return report


def false_accept_threshold(scores, labels, rate=0.01):
    """The lowest threshold (accept when score >= it) with a false-accept rate <= ``rate``.

    Arguments
    ---------
    scores, labels : array-like
        Trial scores and labels (1 target, 0 non-target).
    rate : float
        The largest acceptable fraction of non-target trials accepted.

    Returns
    -------
    (threshold, false_accept_rate) : float, float

    Example
    -------
    >>> scores = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85]
    >>> labels = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> false_accept_threshold(scores, labels, rate=0.25)  # 2 of 9 non-targets accepted
    (0.8, 0.2222222222222222)
    >>> threshold, far = false_accept_threshold(scores, labels, rate=0.0)
    >>> threshold > 0.85, far
    (True, 0.0)
    """
    scores, labels = _check_trials(scores, labels)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"false-accept rate must be in [0, 1), got {rate}")
    nontarget = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(rate * len(nontarget) + 1e-9))
    threshold = np.nextafter(nontarget[allowed], np.inf)
    if allowed > 0 and nontarget[allowed - 1] > nontarget[allowed]:
        threshold = nontarget[allowed - 1]
    accepted = int((nontarget >= threshold).sum())
    return float(threshold), accepted / len(nontarget)


def between_scores(scores, threshold):
    """A threshold with the same decisions as ``threshold`` that sits on no score.

    Returns the midpoint between the largest score below ``threshold`` and the smallest
    score at or above it (accept ``score >= threshold``), so that every trial keeps its
    decision and a stored threshold is never one trial's score, whose last float digit
    would otherwise decide that trial on another machine or embedding path.

    Example
    -------
    >>> between_scores([0.1, 0.3, 0.5, 0.7], 0.5)
    0.4
    >>> between_scores([0.1, 0.3], 0.2)
    0.2
    >>> between_scores([0.1, 0.3], 0.05) < 0.1 < between_scores([0.1, 0.3], 0.35)
    True
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    k = int(np.searchsorted(scores, threshold, side="left"))  # scores[k] >= threshold
    spread = max(float(scores[-1] - scores[0]), 1e-6)
    below = scores[k - 1] if k > 0 else scores[0] - spread
    above = scores[k] if k < len(scores) else scores[-1] + spread
    return float(round((below + above) / 2.0, 15))

