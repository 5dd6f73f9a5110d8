"""Pins of the evaluation pipeline and of where FEFA acts, against independent computations.

Each test here catches a plausible bug that the other tests let through: non-target
trials of one speaker (or self-pairs, repeats, unordered pairs) in the rejection-sampling
branch of trial generation; s-norm / AS-norm using one side twice (against a
brute-force loop); memory that grows with the trials instead of the files; a FEFA2d
moved to another place in its backbone (forward hooks); FEFA's zero-initialized
parameters receiving no gradient.
"""

import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

from fefa_speechbrain.data.trials import Trial, generate_trials
from fefa_speechbrain.evaluation.verification import cosine_scores, normalize_scores
from fefa_speechbrain.lobes.fefa import FEFA
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
from fefa_speechbrain.lobes.thin_seresnet import ThinSEResNet34
from fefa_speechbrain.lobes.vggm import VGGM

Utt = namedtuple("Utt", ["speaker", "rel"])


# ------------------------------------------------------------- generated non-target trials


@pytest.mark.parametrize("n_trials", [None, 400, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_trials_over_many_speakers(n_trials, seed):
    """20 speakers x 8 files: 560 target pairs and 12,160 non-target pairs, so the
    non-targets come from the rejection-sampling branch (more than 4x what is needed);
    a random pair is of one speaker 4.4 % of the time, so a sampler that let such pairs
    (or self-pairs) through would show them here."""
    utts = [Utt(f"spk{s:02d}", f"spk{s:02d}/{u}.wav") for s in range(20) for u in range(8)]
    speaker = {u.rel: u.speaker for u in utts}
    trials = generate_trials(utts, n_trials=n_trials, seed=seed)
    targets = [t for t in trials if t.label == 1]
    nontargets = [t for t in trials if t.label == 0]
    expected_targets = 560 if n_trials is None else n_trials // 2
    assert len(targets) == expected_targets and len(nontargets) == expected_targets
    assert all(speaker[t.enrol] == speaker[t.test] for t in targets)
    assert all(speaker[t.enrol] != speaker[t.test] for t in nontargets)  # cross-speaker
    assert all(t.enrol < t.test for t in trials)  # ordered, hence no self-pair
    assert len({(t.enrol, t.test) for t in trials}) == len(trials)  # distinct
    assert [(t.enrol, t.test) for t in trials] == sorted((t.enrol, t.test) for t in trials)
    assert [t.line for t in trials] == list(range(1, len(trials) + 1))
    assert generate_trials(utts, n_trials=n_trials, seed=seed) == trials  # seeded


# ------------------------------------------------------------------ score normalization


def _brute_force_norm(embeddings, trials, cohort, method, cohort_size):
    """s-norm / AS-norm one trial at a time, with explicit loops."""
    def stats(path):
        e = torch.nn.functional.normalize(embeddings[path].float().flatten(), dim=0)
        scores = sorted((float(e @ c) for c in cohort), reverse=True)
        if method == "as-norm":
            scores = scores[:cohort_size]
        mean = sum(scores) / len(scores)
        std = (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5
        return mean, std

    out = []
    for trial in trials:
        e = torch.nn.functional.normalize(embeddings[trial.enrol].flatten(), dim=0)
        t = torch.nn.functional.normalize(embeddings[trial.test].flatten(), dim=0)
        raw = float(e @ t)
        (me, se), (mt, st) = stats(trial.enrol), stats(trial.test)
        out.append(0.5 * ((raw - me) / se + (raw - mt) / st))
    return np.array(out)


@pytest.mark.parametrize("method, cohort_size", [("s-norm", 200), ("as-norm", 5)])
def test_score_normalization_matches_a_brute_force_loop(method, cohort_size):
    g = torch.Generator().manual_seed(3)
    embeddings = {f"f{i}": torch.randn(1, 16, generator=g) for i in range(6)}
    trials = [Trial(i % 2, f"f{i}", f"f{(i * 2 + 1) % 6}") for i in range(6)]
    cohort = torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=-1)
    raw = cosine_scores(embeddings, trials)
    got = normalize_scores(raw, embeddings, trials, cohort, method, cohort_size)
    expected = _brute_force_norm(embeddings, trials, cohort, method, cohort_size)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the two sides differ: using one side twice would not match
    assert not np.allclose(got, _brute_force_norm(
        embeddings, [t._replace(test=t.enrol) for t in trials], cohort, method, cohort_size
    ), atol=1e-3)


# ---------------------------------------------------------------- scoring memory


SCORING_MEMORY = """
import resource, sys, torch
from fefa_speechbrain.data.trials import Trial
from fefa_speechbrain.evaluation.verification import cosine_scores
files = [f"spk{i}/utt.wav" for i in range(6)]
embeddings = {f: torch.randn(1, 512) for f in files}
trials = [Trial(i % 2, files[i % 6], files[(i + 1) % 6], i + 1) for i in range(300_000)]
cosine_scores(embeddings, trials[:10])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scores = cosine_scores(embeddings, trials)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a, b = embeddings[files[0]].flatten(), embeddings[files[1]].flatten()
assert abs(float(scores[0]) - float(a @ b / a.norm() / b.norm())) < 1e-5
print((after - before) / 1024)
"""


def test_scoring_memory_grows_with_files_not_trials():
    """300,000 trials over 6 files of 512-d embeddings: stacking two embeddings per trial
    would take 1.2 GB; scoring by index takes tens of MB."""
    result = subprocess.run(
        [sys.executable, "-c", SCORING_MEMORY], capture_output=True, text=True, timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split()[-1]) < 200, result.stdout  # MB above the baseline


# ------------------------------------------------------------- where each FEFA2d acts


def _anchor(model, name):
    """The module after which the hidden FEFA2d ``name`` must act."""
    if isinstance(model, VGGM):
        return f"layers.{name}"
    return f"stages.{name}.0" if name.startswith("stage") else name


@pytest.mark.parametrize("make", [
    lambda: ThinResNet34(fefa="multi", aggregation="tap", emb_dim=16, width=0.125),
    lambda: ThinSEResNet34(fefa="multi", aggregation="tap", emb_dim=16, width=0.125),
    lambda: VGGM(fefa="multi", emb_dim=16, width=0.125),
], ids=["thin_resnet34", "thin_seresnet34", "vggm"])
def test_each_fefa2d_acts_right_after_its_layer(make):
    """Forward hooks record the order of calls: each FEFA2d takes, as its input, the very
    output of its layer (thin-ResNet34: a stage's FEFA2d after the stage's FIRST block)."""
    model = make().eval()
    watched = {"input_fefa": model.input_fefa}
    watched.update({f"hidden_fefa.{k}": m for k, m in model.hidden_fefa.items()})
    if isinstance(model, VGGM):
        watched.update({f"layers.{k}": m for k, m in model.layers.items()})
    else:
        watched.update({"stem": model.stem, "stem_pool": model.stem_pool,
                        "freq_pool": model.freq_pool})
        for stage, blocks in model.stages.items():
            watched.update({f"stages.{stage}.{i}": b for i, b in enumerate(blocks)})
    calls = []

    def hook(name):
        def record(module, inputs, output):
            calls.append((name, inputs[0], output[0] if isinstance(output, tuple) else output))
        return record

    for name, module in watched.items():
        module.register_forward_hook(hook(name))
    x = torch.rand(2, 120, 257)
    model(x, torch.tensor([1.0, 0.8]))
    names = [c[0] for c in calls]
    assert names[0] == "input_fefa" and calls[0][1] is x
    assert len(model.hidden_fefa) == (5 if isinstance(model, VGGM) else 5)
    for key in model.hidden_fefa:
        position = names.index(f"hidden_fefa.{key}")
        previous_name, _, previous_output = calls[position - 1]
        assert previous_name == _anchor(model, key), names
        assert calls[position][1] is previous_output


def test_fefa_parameters_get_a_gradient_at_their_zero_initialization():
    model = ThinResNet34(fefa="multi", aggregation="tap", emb_dim=16, width=0.125)
    fefas = [m for m in model.modules() if isinstance(m, FEFA)]
    assert all(float(p.abs().sum()) == 0 for m in fefas for p in m.parameters())
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 16, generator=g)
    loss = ((model(torch.rand(2, 80, 257, generator=g), torch.tensor([1.0, 0.7])) - target) ** 2).sum()
    loss.backward()
    for module in fefas:
        for name, param in module.named_parameters():
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, (module, name)
