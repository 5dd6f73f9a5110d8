"""Backbones with FEFA: shapes, padding invariance, identity at init, gradients, sizes."""
import pytest
import torch

from fefa_speechbrain.lobes.fefa import FEFA, FEFA2d
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34
from fefa_speechbrain.lobes.thin_seresnet import ThinSEResNet34
from fefa_speechbrain.lobes.vggm import VGGM

PLACEMENTS = ("none", "single", "multi")
AGGREGATIONS = {
    ThinResNet34: ("tap", "gvlad", "asp"),
    ThinSEResNet34: ("tap", "gvlad"),
    VGGM: ("tap",),
}
CONFIGS = [(cls, agg) for cls, aggs in AGGREGATIONS.items() for agg in aggs]
EMB = 24
WIDTH = 0.125  # narrow nets keep the CPU tests fast


def _ids(value):
    return value.__name__ if isinstance(value, type) else str(value)


def _small(cls, fefa, aggregation, seed=0, **kwargs):
    """A narrow model in eval mode whose BN layers have non-trivial statistics and shifts.

    Non-zero BN shifts make padded frames non-zero after every BN, so a missing mask
    shows (FEFA parameters stay at their identity init; see ``_randomize_fefa``).
    """
    torch.manual_seed(seed)
    model = cls(fefa=fefa, aggregation=aggregation, emb_dim=EMB, width=WIDTH, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.num_features, generator=g))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=g))
    return model.eval()


def _randomize_fefa(model, seed=3):
    """Moves every FEFA parameter off its identity init, so the attention matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for fefa in model.fefa_modules():
            for p in fefa.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("fefa", PLACEMENTS)
@pytest.mark.parametrize("cls,aggregation", CONFIGS, ids=_ids)
def test_shapes_and_padded_batch_equals_each_alone(cls, aggregation, fefa):
    """1 s and 3.7 s inputs, batch 1 and 3; a padded batch gives each item's embedding."""
    model = _randomize_fefa(_small(cls, fefa, aggregation))
    frames = [101, 371, 20]  # 20 is shorter than VGG-M's minimum of 65
    longest = max(frames)
    items = [torch.rand(1, n, 257) for n in frames]
    batch = torch.full((len(frames), longest, 257), 7.0)  # garbage in the padding
    for i, item in enumerate(items):
        batch[i, : frames[i]] = item[0]
    with torch.no_grad():
        padded = model(batch, torch.tensor(frames) / longest)
        alone = [model(item) for item in items]
        short_batch = model(torch.rand(3, 101, 257), torch.tensor([1.0, 0.5, 0.8]))
    assert padded.shape == short_batch.shape == (3, 1, EMB)
    assert all(out.shape == (1, 1, EMB) for out in alone)
    assert torch.isfinite(short_batch).all() and padded.abs().max() > 0
    torch.testing.assert_close(padded, torch.cat(alone), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fefa", ("single", "multi"))
@pytest.mark.parametrize("cls,aggregation", CONFIGS, ids=_ids)
def test_untrained_fefa_leaves_output_unchanged(cls, aggregation, fefa):
    plain = _small(cls, "none", aggregation, seed=5)
    model = cls(fefa=fefa, aggregation=aggregation, emb_dim=EMB, width=WIDTH).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    fefa_keys = {
        f"{name}.{param}"
        for name, module in model.named_modules()
        if isinstance(module, FEFA)
        for param, _ in module.named_parameters()
    }
    assert not unexpected and set(missing) == fefa_keys and fefa_keys
    x, lengths = torch.rand(2, 101, 257), torch.tensor([1.0, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths), plain(x, lengths), rtol=1e-4, atol=1e-6)
        # and FEFA does change the output once its parameters move
        assert not torch.allclose(_randomize_fefa(model)(x, lengths), plain(x, lengths))


@pytest.mark.parametrize("cls,aggregation", CONFIGS, ids=_ids)
def test_gradients_reach_every_fefa_parameter(cls, aggregation):
    model = _randomize_fefa(_small(cls, "multi", aggregation)).train()
    out = model(torch.rand(2, 101, 257), torch.tensor([1.0, 0.7]))
    (out * torch.randn_like(out)).sum().backward()
    params = [p for fefa in model.fefa_modules() for p in fefa.parameters()]
    assert len(params) == 12
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cls,hidden_bins",
    [
        (ThinResNet34, [128, 64, 32, 16, 7]),
        (ThinSEResNet34, [128, 64, 32, 16, 7]),
        (VGGM, [127, 63, 31, 15, 4]),
    ],
    ids=_ids,
)
def test_fefa_modules_and_insertion_points(cls, hidden_bins):
    none, single, multi = (cls(fefa=f, width=0.125, emb_dim=8) for f in PLACEMENTS)
    assert none.input_fefa is None and none.fefa_modules() == []
    assert isinstance(single.input_fefa, FEFA) and single.fefa_modules() == [single.input_fefa]
    modules = multi.fefa_modules()
    assert modules[0] is multi.input_fefa and modules[0].n_bins == 257
    assert all(isinstance(m, FEFA2d) for m in modules[1:])
    assert [m.n_bins for m in modules[1:]] == hidden_bins


def test_thin_resnet_trunk_output_is_512_by_7_by_16():
    model = ThinResNet34(fefa="single").eval()
    seen = {}
    model.head.register_forward_pre_hook(lambda module, args: seen.update(shape=args[0].shape))
    with torch.no_grad():
        out = model(torch.rand(1, 250, 257))
    assert seen["shape"] == (1, 512, 16, 7)  # [batch, channels, time, freq]
    assert out.shape == (1, 1, 512) and torch.isfinite(out).all()


# Parameter counts at full width, 257 bins (the README table).
FULL_COUNTS = {
    (ThinResNet34, "gvlad"): 7_663_370,
    (ThinResNet34, "tap"): 5_788_416,
    (ThinResNet34, "asp"): 6_116_353,
    (ThinSEResNet34, "tap"): 5_922_804,
    (ThinSEResNet34, "gvlad"): 7_797_758,
    (VGGM, "tap"): 11_378_720,
}
# FEFA2d parameters of placement "multi": 2 per bin of every hidden insertion point
MULTI_EXTRA = {
    ThinResNet34: 2 * (128 + 64 + 32 + 16 + 7),
    ThinSEResNet34: 2 * (128 + 64 + 32 + 16 + 7),
    VGGM: 2 * (127 + 63 + 31 + 15 + 4),
}


@pytest.mark.parametrize("cls,aggregation", list(FULL_COUNTS), ids=_ids)
def test_full_width_parameter_counts(cls, aggregation):
    counts = {f: _n_params(cls(fefa=f, aggregation=aggregation)) for f in PLACEMENTS}
    print(f"{cls.__name__}+{aggregation}: {counts}")
    assert counts["none"] == FULL_COUNTS[cls, aggregation]
    assert counts["single"] - counts["none"] == 514
    assert counts["multi"] - counts["none"] == 514 + MULTI_EXTRA[cls]


def test_thin_resnet_gvlad_matches_published_size():
    model = ThinResNet34(fefa="none", aggregation="gvlad")
    trunk = sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("head.")
    )
    assert abs(_n_params(model) - 7.66e6) / 7.66e6 < 0.05
    assert abs(trunk - 3.69e6) / 3.69e6 < 0.01


def test_per_channel_hidden_fefa():
    model = ThinResNet34(fefa="multi", width=0.25, fefa_per_channel=True)
    hidden = model.fefa_modules()[1:]
    shapes = [(16, 128), (32, 64), (64, 32), (128, 16), (128, 7)]  # (channels, bins)
    assert [tuple(m.weight.shape) for m in hidden] == shapes


@pytest.mark.parametrize("cls,aggregation", CONFIGS, ids=_ids)
def test_emb_relu_false_gives_the_embedding_layer_before_its_relu(cls, aggregation):
    """Same weights: the published ReLU output equals the linear embedding clipped at 0."""
    linear = _small(cls, "single", aggregation, emb_relu=False)
    published = _small(cls, "single", aggregation)
    published.load_state_dict(linear.state_dict())
    x, lengths = torch.randn(3, 90, 257), torch.tensor([1.0, 0.8, 0.7])
    with torch.no_grad():
        raw, clipped = linear(x, lengths), published(x, lengths)
    assert (raw < 0).any() and (clipped >= 0).all()
    torch.testing.assert_close(clipped, torch.relu(raw))


def test_width_scales_channels():
    model = ThinResNet34(fefa="none", width=0.25)
    assert model.stem.conv.out_channels == 16
    assert model.stages["stage5"][-1].expand.conv.out_channels == 128
    assert model.head.frame_conv.out_channels == 128
    assert VGGM(fefa="none", width=0.001).fc6.conv.out_channels == 8


@pytest.mark.parametrize("cls,frames", [(ThinResNet34, 2), (VGGM, 65)], ids=_ids)
def test_min_frames_is_the_shortest_the_trunk_accepts(cls, frames):
    model = cls(fefa="none", width=0.125, emb_dim=8).eval()
    assert model.min_frames == frames
    model.min_frames = 0  # switch the internal padding off
    with torch.no_grad():
        assert model(torch.rand(1, frames, 257)).shape == (1, 1, 8)
        with pytest.raises(RuntimeError):
            model(torch.rand(1, frames - 1, 257))


def test_very_short_inputs_run():
    for cls in (ThinResNet34, VGGM):
        model = _small(cls, "multi", "tap")
        with torch.no_grad():
            assert torch.isfinite(model(torch.rand(2, 1, 257), torch.tensor([1.0, 1.0]))).all()


AUTOCAST_CONFIGS = [
    (ThinResNet34, "gvlad"),
    (ThinResNet34, "asp"),
    (ThinSEResNet34, "tap"),
    (VGGM, "tap"),
]


@pytest.mark.parametrize(
    "dtype,tolerance", [(torch.bfloat16, 0.1), (torch.float16, 0.02)], ids=str
)
@pytest.mark.parametrize("cls,aggregation", AUTOCAST_CONFIGS, ids=_ids)
def test_autocast(cls, aggregation, dtype, tolerance):
    model = _randomize_fefa(_small(cls, "multi", aggregation))
    x, lengths = torch.randn(2, 101, 257), torch.tensor([1.0, 0.6])  # normalized input
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            reference = model(x, lengths)
        with torch.autocast("cpu", dtype=dtype):
            out = model(x, lengths)
        assert out.dtype == dtype and torch.isfinite(out).all()
        error = torch.linalg.vector_norm(out.float() - reference)
        assert error < tolerance * torch.linalg.vector_norm(reference)
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fefa='both'"):
        ThinResNet34(fefa="both")
    with pytest.raises(ValueError, match="aggregation='max'"):
        ThinResNet34(aggregation="max")
    with pytest.raises(ValueError, match="VGGM supports only aggregation='tap'"):
        VGGM(aggregation="gvlad")
    with pytest.raises(ValueError, match="width"):
        VGGM(width=0)
    with pytest.raises(ValueError, match="se_reduction"):
        ThinSEResNet34(se_reduction=0)
    with pytest.raises(ValueError, match=r"ThinResNet34 expects input \[batch, time, 257\]"):
        ThinResNet34(width=0.125)(torch.rand(1, 100, 40))
    with pytest.raises(ValueError, match="n_bins too small"):
        ThinResNet34(n_bins=20)
