"""Property-based tests (hypothesis) of FEFA and of the verification metrics.

FEFA: for any finite input and any parameters, the output equals a float64 reference
implementation of the module's definition, is finite, the attention is positive and sums
to the number of bins (to one without rescaling), and padding never changes a result.

Metrics (the brute-force comparisons are in test_metrics.py): EER and minDCF depend only
on the order of the scores, are symmetric under swapping targets and non-targets with
negated scores, and do not change when every trial is repeated.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fefa_speechbrain.lobes.fefa import APPLY_MODES, FEFA, KERNELS, FEFA2d
from fefa_speechbrain.evaluation.metrics import compute_eer, compute_min_dcf

FAST = settings(max_examples=60, deadline=None)

# Values of a normalized spectrogram stay within a few units; parameters within a few
# units too. Wide: any magnitude up to 1e4, where the softmax may underflow to 0.
SANE, WIDE = 10.0, 1e4


def _values(limit):
    return st.floats(-limit, limit, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def fefa_cases(draw, limit=SANE, two_d=False):
    """A FEFA or FEFA2d with random options and parameters, an input, and lengths."""
    batch = draw(st.integers(1, 3))
    frames = draw(st.integers(1, 12))
    bins = draw(st.integers(1, 24))
    channels = draw(st.integers(1, 3))
    options = dict(
        kernel=draw(st.sampled_from(KERNELS)),
        apply=draw(st.sampled_from(APPLY_MODES)),
        rescale=draw(st.booleans()),
    )
    if two_d:
        per_channel = draw(st.booleans())
        module = FEFA2d(bins, channels=channels, per_channel=per_channel, **options)
        shape = (batch, channels, frames, bins)
    else:
        module = FEFA(bins, **options)
        shape = (batch, frames, bins)
    with torch.no_grad():
        for param in module.parameters():
            values = draw(arrays(np.float32, tuple(param.shape), elements=_values(3.0)))
            param.copy_(torch.from_numpy(values))
    x = draw(arrays(np.float32, shape, elements=_values(limit)))
    valid = draw(st.lists(st.integers(1, frames), min_size=batch, max_size=batch))
    return module.eval(), torch.from_numpy(x), valid


def _relative(valid, frames):
    return torch.tensor([n / frames for n in valid])


def _reference(module, x, valid):
    """FEFA's definition in float64: pooled query, kernel, softmax, (rescale), apply."""
    x = x.double()
    two_d = x.dim() == 4
    time_dim = 2 if two_d else 1
    weight = module.weight.detach().double()
    bias = None if module.bias is None else module.bias.detach().double()
    out, attention = torch.empty_like(x), []
    for item, n in enumerate(valid):
        frames = x[item].narrow(time_dim - 1, 0, n)
        pooled = frames.mean(dim=time_dim - 1)  # [F], or [C, F] for FEFA2d
        if two_d and not module.per_channel:
            pooled = pooled.mean(0)
        scores = pooled * weight + bias if module.kernel == "local" else weight.expand_as(pooled)
        weights = torch.softmax(scores, dim=-1)
        if module.rescale:
            weights = weights * module.n_bins
        if module.apply_mode == "pooled":
            weights = weights * pooled
        attention.append(weights)
        if two_d:
            scale = weights.unsqueeze(1) if module.per_channel else weights
        else:
            scale = weights
        out[item] = x[item] * scale
    return out, torch.stack(attention)


def _check_against_reference(module, x, valid):
    out = module(x, _relative(valid, x.shape[-2]))
    expected, attention = _reference(module, x, valid)
    time_dim = x.dim() - 2
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and torch.isfinite(module.last_attention).all()
    for item, n in enumerate(valid):  # frames past the length are padding: not compared
        torch.testing.assert_close(
            out[item].narrow(time_dim - 1, 0, n).double(),
            expected[item].narrow(time_dim - 1, 0, n),
            rtol=1e-4, atol=1e-4,
        )
    torch.testing.assert_close(module.last_attention.double(), attention, rtol=1e-4, atol=1e-5)
    return out


def _check_attention(module, strictly_positive):
    if module.apply_mode != "scale":
        return  # "pooled" multiplies by the (signed) time average: not a distribution
    attention = module.last_attention
    total = module.n_bins if module.rescale else 1.0
    assert (attention >= 0).all()
    if strictly_positive:
        assert (attention > 0).all()
    torch.testing.assert_close(
        attention.sum(-1), torch.full(attention.shape[:-1], float(total)), rtol=1e-5, atol=1e-5
    )


@FAST
@given(fefa_cases())
def test_fefa_matches_its_definition_with_positive_attention(case):
    module, x, valid = case
    _check_against_reference(module, x, valid)
    _check_attention(module, strictly_positive=True)


@FAST
@given(fefa_cases(limit=WIDE))
def test_fefa_is_finite_for_any_magnitude(case):
    module, x, valid = case
    out = module(x, _relative(valid, x.shape[1]))
    assert torch.isfinite(out).all()
    _check_attention(module, strictly_positive=False)
    if module.apply_mode == "scale":  # each output is the input times a weight in [0, F]
        bound = x.abs() * (module.n_bins if module.rescale else 1.0)
        assert (out.abs() <= bound * (1 + 1e-5)).all()


@FAST
@given(fefa_cases(two_d=True))
def test_fefa2d_matches_its_definition_with_positive_attention(case):
    module, x, valid = case
    _check_against_reference(module, x, valid)
    _check_attention(module, strictly_positive=True)
    expected_shape = (x.shape[0], x.shape[1], x.shape[3]) if module.per_channel else (
        x.shape[0], x.shape[3])
    assert module.last_attention.shape == expected_shape


@FAST
@given(fefa_cases(limit=WIDE, two_d=True))
def test_fefa2d_is_finite_for_any_magnitude(case):
    module, x, valid = case
    assert torch.isfinite(module(x, _relative(valid, x.shape[2]))).all()
    _check_attention(module, strictly_positive=False)


@FAST
@given(fefa_cases(), st.data())
def test_padding_never_changes_fefa(case, data):
    """Each item alone equals the same item zero- or garbage-padded in a batch."""
    module, x, valid = case
    fill = data.draw(st.sampled_from([0.0, 1e3, -7.0]))
    padded = x.clone()
    for item, n in enumerate(valid):
        padded[item, n:] = fill
    out = module(padded, _relative(valid, x.shape[1]))
    batch_attention = module.last_attention
    for item, n in enumerate(valid):
        alone = module(x[item : item + 1, :n])
        torch.testing.assert_close(out[item, :n], alone[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            batch_attention[item], module.last_attention[0], rtol=1e-5, atol=1e-6
        )


@FAST
@given(fefa_cases(two_d=True), st.data())
def test_padding_never_changes_fefa2d(case, data):
    module, x, valid = case
    fill = data.draw(st.sampled_from([0.0, 1e3, -7.0]))
    padded = x.clone()
    for item, n in enumerate(valid):
        padded[item, :, n:] = fill
    out = module(padded, _relative(valid, x.shape[2]))
    batch_attention = module.last_attention
    for item, n in enumerate(valid):
        alone = module(x[item : item + 1, :, :n])
        torch.testing.assert_close(out[item, :, :n], alone[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            batch_attention[item], module.last_attention[0], rtol=1e-5, atol=1e-6
        )


# ----------------------------------------------------------------------------- metrics


@st.composite
def trial_lists(draw, max_trials=40):
    """Scores with many ties (drawn from a small pool) and both kinds of labels."""
    n = draw(st.integers(2, max_trials))
    pool = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=n))
    scores = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)))
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    first, second = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    labels[first], labels[second] = True, False
    return scores, labels


def _accepted(scores, threshold):
    return int((scores >= threshold).sum())


@st.composite
def increasing_maps(draw, scores):
    """A strictly increasing map of the distinct scores onto other floats."""
    distinct = np.unique(scores)
    steps = draw(arrays(np.float64, len(distinct), elements=st.floats(1e-3, 1e3)))
    start = draw(st.floats(-1e3, 1e3))
    values = start + np.cumsum(steps)
    return values[np.searchsorted(distinct, scores)]


@settings(max_examples=150, deadline=None)
@given(trial_lists(), st.data(), st.sampled_from([0.01, 0.05, 0.5, 0.9]))
def test_metrics_depend_only_on_the_order_of_the_scores(trials, data, p_target):
    scores, labels = trials
    mapped = data.draw(increasing_maps(scores))
    assert (np.argsort(mapped, kind="stable") == np.argsort(scores, kind="stable")).all()
    eer, eer_threshold = compute_eer(scores, labels)
    mapped_eer, mapped_eer_threshold = compute_eer(mapped, labels)
    assert mapped_eer == eer
    assert _accepted(mapped, mapped_eer_threshold) == _accepted(scores, eer_threshold)
    dcf, dcf_threshold = compute_min_dcf(scores, labels, p_target=p_target)
    mapped_dcf, mapped_dcf_threshold = compute_min_dcf(mapped, labels, p_target=p_target)
    assert mapped_dcf == dcf
    assert _accepted(mapped, mapped_dcf_threshold) == _accepted(scores, dcf_threshold)
    assert np.isfinite([eer_threshold, dcf_threshold, mapped_eer_threshold]).all()


@settings(max_examples=150, deadline=None)
@given(
    trial_lists(),
    st.sampled_from([0.01, 0.05, 0.3]),
    st.sampled_from([(1.0, 1.0), (1.0, 10.0), (3.0, 0.5)]),
)
def test_swapping_targets_and_nontargets_with_negated_scores(trials, p_target, costs):
    """Accept ``-s >= t`` is reject ``s > -t``: the DET curve with its axes swapped, so
    the EER is the same and minDCF is the same with p_target and the costs swapped."""
    scores, labels = trials
    c_miss, c_fa = costs
    eer, _ = compute_eer(scores, labels)
    assert compute_eer(-scores, ~labels)[0] == pytest.approx(eer, abs=1e-12)
    dcf, _ = compute_min_dcf(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    swapped, _ = compute_min_dcf(-scores, ~labels, p_target=1 - p_target, c_miss=c_fa, c_fa=c_miss)
    assert swapped == pytest.approx(dcf, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(trial_lists(max_trials=20), st.integers(2, 4), st.sampled_from([0.01, 0.05]))
def test_repeating_every_trial_changes_nothing(trials, copies, p_target):
    scores, labels = trials
    repeated_scores, repeated_labels = np.tile(scores, copies), np.tile(labels, copies)
    assert compute_eer(repeated_scores, repeated_labels) == pytest.approx(
        compute_eer(scores, labels), abs=1e-12
    )
    assert compute_min_dcf(repeated_scores, repeated_labels, p_target=p_target) == pytest.approx(
        compute_min_dcf(scores, labels, p_target=p_target), abs=1e-12
    )
