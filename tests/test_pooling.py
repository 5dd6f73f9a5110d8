"""Aggregations: brute-force references, padding, frame order, ghost clusters, autocast."""
import math

import pytest
import torch

from fefa_speechbrain.lobes.pooling import (
    AttentiveStatisticsPooling,
    GhostVLAD,
    TemporalAveragePooling,
    build_aggregation,
)

LENGTHS = torch.tensor([30, 17, 1])


def _frames(channels=6, time=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(LENGTHS), channels, time, generator=g)


def _with_garbage(x, lengths):
    """Copy of x with large values in every padded frame."""
    x = x.clone()
    for b, n in enumerate(lengths):
        x[b, :, n:] = 1e3
    return x


def test_tap_equals_hand_computed_masked_mean():
    x = _frames()
    out = TemporalAveragePooling(6)(_with_garbage(x, LENGTHS), LENGTHS)
    expected = torch.stack([x[b, :, :n].mean(dim=1) for b, n in enumerate(LENGTHS)])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(TemporalAveragePooling(6)(x), x.mean(dim=2))


def _vlad_reference(vlad, x, lengths, assign_from):
    """GhostVLAD written out cluster by cluster and frame by frame."""
    outputs = []
    for b, n in enumerate(lengths):
        logits = vlad.assignment(assign_from[b : b + 1, :, :n])[0]  # [K + G, n]
        weights = torch.softmax(logits, dim=0)
        blocks = []
        for k in range(vlad.num_clusters):
            residual = sum(weights[k, t] * (x[b, :, t] - vlad.centres[k]) for t in range(n))
            blocks.append(residual / residual.norm())
        flat = torch.cat(blocks)
        outputs.append(flat / flat.norm())
    return torch.stack(outputs)


def test_gvlad_matches_brute_force_reference():
    torch.manual_seed(0)
    vlad = GhostVLAD(6, num_clusters=4, ghost_clusters=2, assign_channels=5)
    x, assign_from = _frames(), _frames(channels=5, seed=1)
    garbage_x, garbage_assign = _with_garbage(x, LENGTHS), _with_garbage(assign_from, LENGTHS)
    out = vlad(garbage_x, LENGTHS, assign_from=garbage_assign)
    assert out.shape == (3, 4 * 6)  # K * D: no ghost blocks
    with torch.no_grad():
        torch.testing.assert_close(out, _vlad_reference(vlad, x, LENGTHS, assign_from))


def test_gvlad_assigns_from_features_by_default():
    torch.manual_seed(0)
    vlad = GhostVLAD(6, num_clusters=3, ghost_clusters=1)
    x = _frames()
    with torch.no_grad():
        torch.testing.assert_close(vlad(x, LENGTHS), _vlad_reference(vlad, x, LENGTHS, x))


def test_gvlad_frames_sent_to_a_ghost_cluster_do_not_count():
    torch.manual_seed(0)
    vlad = GhostVLAD(6, num_clusters=4, ghost_clusters=2, assign_channels=1)
    with torch.no_grad():
        vlad.assignment.weight.zero_()
        vlad.assignment.bias.zero_()
        vlad.assignment.weight[4, 0, 0] = 60.0  # first ghost cluster takes flagged frames
    x = _frames(time=20)[:1]
    flags = torch.zeros(1, 1, 20)
    ghost_frames = [2, 3, 9, 15]
    flags[0, 0, ghost_frames] = 1.0
    kept = [t for t in range(20) if t not in ghost_frames]
    with torch.no_grad():
        full = vlad(x, assign_from=flags)
        without = vlad(x[:, :, kept], assign_from=flags[:, :, kept])
        changed = vlad(x, assign_from=torch.zeros(1, 1, 20))
    torch.testing.assert_close(full, without)
    assert not torch.allclose(full, changed, atol=1e-3)


def test_gvlad_is_invariant_to_frame_order_and_padding():
    torch.manual_seed(0)
    vlad = GhostVLAD(6, num_clusters=8, ghost_clusters=2)
    x = _frames()
    shuffled = x.clone()
    for b, n in enumerate(LENGTHS):
        shuffled[b, :, :n] = x[b, :, torch.randperm(int(n))]
    with torch.no_grad():
        out = vlad(x, LENGTHS)
        torch.testing.assert_close(vlad(_with_garbage(shuffled, LENGTHS), LENGTHS), out)
        alone = torch.cat([vlad(x[b : b + 1, :, :n]) for b, n in enumerate(LENGTHS)])
    torch.testing.assert_close(out, alone)


def test_gvlad_blocks_are_intra_normalized():
    vlad = GhostVLAD(16, num_clusters=8, ghost_clusters=2)
    with torch.no_grad():
        out = vlad(torch.randn(3, 16, 40), LENGTHS)
    block_norms = torch.linalg.vector_norm(out.view(3, 8, 16), dim=2)
    torch.testing.assert_close(block_norms, torch.full((3, 8), 1 / math.sqrt(8)))
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), torch.ones(3))


def test_gvlad_parameters_and_gradients():
    vlad = GhostVLAD(512, num_clusters=8, ghost_clusters=2, assign_channels=512 * 7)
    # assignment conv spanning 7 bins (with bias) + the 8 real centres
    assert sum(p.numel() for p in vlad.parameters()) == 512 * 7 * 10 + 10 + 8 * 512
    small = GhostVLAD(6, num_clusters=3, ghost_clusters=2)
    small(_frames(), LENGTHS).pow(3).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in small.parameters())


def _asp_reference(pool, x, lengths):
    outputs = []
    for b, n in enumerate(lengths):
        frames = x[b, :, :n]  # [C, n]
        weights = torch.softmax(pool.attention(frames.unsqueeze(0))[0, 0], dim=0)
        mean = (frames * weights).sum(dim=1)
        std = ((frames - mean[:, None]) ** 2 * weights).sum(dim=1).sqrt()
        outputs.append(torch.cat([mean, std]))
    return torch.stack(outputs)


def test_asp_matches_reference_and_ignores_padding():
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(6, attention_channels=5)
    x = _frames()
    with torch.no_grad():
        out = pool(_with_garbage(x, LENGTHS), LENGTHS)
        expected = _asp_reference(pool, x, LENGTHS)
    assert out.shape == (3, 12)
    torch.testing.assert_close(out[:2], expected[:2])
    # one frame: the mean is the frame, the std is clamped at sqrt(eps)
    torch.testing.assert_close(out[2, :6], x[2, :, 0])
    torch.testing.assert_close(out[2, 6:], torch.full((6,), math.sqrt(pool.eps)))


def test_asp_is_invariant_to_frame_order():
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(6, attention_channels=5)
    x = _frames()
    with torch.no_grad():
        torch.testing.assert_close(pool(x[:, :, torch.randperm(30)]), pool(x))


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("name", ("tap", "gvlad", "asp"))
def test_autocast_keeps_float32_and_stays_close(name, dtype):
    torch.manual_seed(0)
    pool = build_aggregation(name, 64, attention_channels=16)
    # low-precision frames, as a conv gives under autocast; their sum over 1000 frames
    # (about 1e5) would overflow float16
    x = (200 * torch.rand(2, 64, 1000)).to(dtype)
    lengths = torch.tensor([1000, 123])
    with torch.no_grad():
        reference = pool(x.float(), lengths)
        with torch.autocast("cpu", dtype=dtype):
            out = pool(x, lengths)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    error = torch.linalg.vector_norm(out - reference) / torch.linalg.vector_norm(reference)
    assert error < 0.02


def test_build_aggregation():
    assert isinstance(build_aggregation("tap", 10), TemporalAveragePooling)
    vlad = build_aggregation("gvlad", 10, num_clusters=4, ghost_clusters=1, assign_channels=70)
    assert isinstance(vlad, GhostVLAD) and vlad.out_channels == 40
    assert vlad.assignment.in_channels == 70 and vlad.assignment.out_channels == 5
    asp = build_aggregation("asp", 10, attention_channels=3)
    assert isinstance(asp, AttentiveStatisticsPooling) and asp.out_channels == 20
    with pytest.raises(ValueError, match="aggregation='mean'"):
        build_aggregation("mean", 10)
    with pytest.raises(ValueError, match="num_clusters >= 1"):
        GhostVLAD(10, num_clusters=0)
