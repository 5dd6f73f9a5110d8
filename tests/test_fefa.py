"""Behaviour of the FEFA module: identity at init, padding, gradients, variants."""
import pytest
import torch

from fefa_speechbrain.lobes.fefa import FEFA, FEFA2d, check_placement


def _trained(module, seed=0):
    """Gives the module random non-zero parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def test_parameter_count_single_257():
    assert sum(p.numel() for p in FEFA(257).parameters()) == 514
    assert sum(p.numel() for p in FEFA(257, kernel="literal").parameters()) == 257


@pytest.mark.parametrize("kernel", ["local", "literal"])
def test_untrained_is_identity(kernel):
    x = torch.randn(3, 77, 257)
    y = FEFA(257, kernel=kernel)(x, torch.tensor([1.0, 0.4, 0.9]))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)


def test_attention_positive_sums_to_bins():
    fefa = _trained(FEFA(257))
    fefa(torch.randn(4, 50, 257))
    a = fefa.last_attention
    assert (a > 0).all()
    torch.testing.assert_close(a.sum(-1), torch.full((4,), 257.0), rtol=1e-5, atol=1e-3)


def test_no_rescale_sums_to_one():
    fefa = _trained(FEFA(257, rescale=False))
    fefa(torch.randn(2, 30, 257))
    torch.testing.assert_close(fefa.last_attention.sum(-1), torch.ones(2))


def test_padding_ignored():
    fefa = _trained(FEFA(257)).eval()
    a, b = torch.randn(1, 60, 257), torch.randn(1, 100, 257)
    batch = torch.zeros(2, 100, 257)
    batch[0, :60] = a[0] + 0
    batch[0, 60:] = 1000.0  # garbage in the padding must not matter
    batch[1] = b[0]
    out = fefa(batch, torch.tensor([0.6, 1.0]))
    att = fefa.last_attention
    alone_a = fefa(a)
    att_a = fefa.last_attention
    torch.testing.assert_close(out[0, :60], alone_a[0])
    torch.testing.assert_close(att[0], att_a[0])
    torch.testing.assert_close(out[1], fefa(b)[0])


def test_gradients_reach_parameters():
    fefa = _trained(FEFA(257))
    x = torch.randn(2, 40, 257)
    fefa(x).pow(2).sum().backward()
    assert fefa.weight.grad.abs().sum() > 0 and fefa.bias.grad.abs().sum() > 0


def test_literal_ignores_input():
    fefa = _trained(FEFA(257, kernel="literal"))
    fefa(torch.randn(1, 20, 257))
    first = fefa.last_attention
    fefa(torch.randn(1, 35, 257) * 5 + 3)
    torch.testing.assert_close(fefa.last_attention, first)


def test_local_depends_on_input():
    fefa = _trained(FEFA(257))
    fefa(torch.randn(1, 20, 257))
    first = fefa.last_attention
    fefa(torch.randn(1, 20, 257) * 5 + 3)
    assert not torch.allclose(fefa.last_attention, first)


def test_pooled_mode_multiplies_by_time_average():
    fefa = FEFA(8, apply="pooled")
    x = torch.rand(1, 10, 8)
    torch.testing.assert_close(fefa(x), x * x.mean(1, keepdim=True))


def test_wrong_bins_is_clear():
    with pytest.raises(ValueError, match="257 frequency bins"):
        FEFA(257)(torch.randn(1, 10, 80))


def test_invalid_choices():
    with pytest.raises(ValueError, match="kernel"):
        FEFA(257, kernel="dense")
    with pytest.raises(ValueError, match="none"):
        check_placement("sometimes")


@pytest.mark.parametrize("per_channel", [False, True])
def test_fefa2d_identity_padding_and_shape(per_channel):
    fefa = FEFA2d(n_bins=16, channels=4, per_channel=per_channel)
    x = torch.randn(2, 4, 30, 16)
    torch.testing.assert_close(fefa(x), x)
    _trained(fefa).eval()
    batch = x.clone()
    batch[0, :, 20:] = 50.0
    out = fefa(batch, torch.tensor([20 / 30, 1.0]))
    torch.testing.assert_close(out[0, :, :20], fefa(x[:1, :, :20])[0])
    n = 2 * 16 * (4 if per_channel else 1)
    assert sum(p.numel() for p in fefa.parameters()) == n
