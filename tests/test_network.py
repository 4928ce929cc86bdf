"""The denoiser's fast paths compute one function: blocks vs whole tensors, folded vs applied
rotary, channels-last vs contiguous input, cached weights after an update, batch vs single, the
hand-written GroupNorm against float64, gradients, and torch.compile (slow)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lefusion.config import DenoiserConfig
from lefusion.models import Denoiser, attention, compile_denoiser, norm
from lefusion.models.norm import group_norm_silu

from .conftest import rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

# Four levels like the published models; at the deepest one H*W < C, so both rotary paths run.
CFG = DenoiserConfig(dim=16, dim_mults=(1, 2, 4, 8), cond_dim=16, attn_heads=4, attn_dim_head=16)
SHAPE = (8, 16, 16)


def _net(cfg: DenoiserConfig = CFG, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    net = Denoiser(cfg)
    with torch.no_grad():  # non-trivial norms and biases (the defaults are 1 and 0)
        for name, p in net.named_parameters():
            if name.endswith(("norm.weight", "norm.gamma")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias") and p.ndim == 1:
                p.normal_(0, 0.5)
    return net.eval()


def _inputs(batch: int = 2, channels: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *SHAPE, generator=g)
    t = torch.randint(0, 300, (batch,), generator=g)
    cond = torch.rand(batch, 16, generator=g)
    return x, t, cond


def _float64_reference(net: Denoiser, x, t, cond) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(net).double()(x.double(), t, cond.double())


def test_blocks_and_whole_tensor_agree_with_float64(monkeypatch):
    net, (x, t, cond) = _net(), _inputs()
    ref = _float64_reference(net, x, t, cond)
    whole = net(x, t, cond).detach()  # autograd on: whole tensors, the differentiable GroupNorm
    monkeypatch.setattr(attention, "BLOCK_TOKENS", 64)  # many blocks per layer
    monkeypatch.setattr(norm, "BLOCK_VALUES", 1000)
    with torch.no_grad():
        blocks = net(x, t, cond)
    assert rel_err(whole, ref) < 2e-6
    assert rel_err(blocks, ref) < 2e-6
    assert rel_err(blocks, whole) < 2e-6


def test_folded_and_applied_rotary_agree(monkeypatch):
    """Rotary folded into per-depth weights (R_z W) x and applied to activations R_z (W x)."""
    net = _net()
    layer = net.encoder[0].depth_attention.fn
    z = torch.randn(2, SHAPE[0], 20, layer.to_qkv.in_features)
    rotary = net.rotary(SHAPE[0], torch.device("cpu"))
    bias = net.depth_position_bias(SHAPE[0], torch.device("cpu"))
    with torch.no_grad():
        folded = layer.attend(z, bias, rotary, fold=True)
        applied = layer.attend(z, bias, rotary, fold=False)
        ref = layer.double().attend(z.double(), bias.double(), rotary, fold=False)
    assert rel_err(folded, ref) < 1e-6 and rel_err(applied, ref) < 1e-6


def test_batch_equals_single_samples_and_layout_does_not_matter():
    net, (x, t, cond) = _net(), _inputs(batch=3)
    with torch.no_grad():
        batch = net(x, t, cond)
        singles = torch.cat([net(x[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(3)])
        channels_last = net(x.contiguous(memory_format=torch.channels_last_3d), t, cond)
    assert batch.is_contiguous()
    assert rel_err(batch, singles) < 5e-6  # mkldnn blocks a batch differently: rounding only
    assert torch.equal(batch, channels_last)


def test_cached_weights_follow_in_place_updates():
    """The per-depth folded weights are cached between no-grad calls; an update must invalidate them."""
    net, (x, t, cond) = _net(), _inputs()
    with torch.no_grad():
        net(x, t, cond)  # fills the caches
        for p in net.parameters():
            p.mul_(1.1)
        updated = net(x, t, cond)
        fresh = copy.deepcopy(net)
        for module in fresh.modules():
            if isinstance(module, attention.DepthAttention):
                module._folded = None
        assert rel_err(updated, fresh(x, t, cond)) < 1e-7


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("film", [False, True])
def test_group_norm_silu_is_accurate_on_offset_data(batch, film):
    """Mean 5, std 0.1: torch 2.13's channels-last GroupNorm (one-pass E[x^2] - E[x]^2) loses 1.4e-4
    here; its contiguous-layout kernel, the one the public network runs, 2e-6 (rounding of x * a + b)."""
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(4, 32)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.normal_()
    x = (torch.randn(batch, 32, 6, 20, 20) * 0.1 + 5.0).contiguous(memory_format=torch.channels_last_3d)
    ss = (torch.randn(batch, 32), torch.randn(batch, 32)) if film else None
    x64, ss64 = x.double(), tuple(u.double() for u in ss) if film else None
    ref = F.group_norm(x64, 4, gn.weight.double(), gn.bias.double())
    if film:
        ref = ref * (ss64[0][:, :, None, None, None] + 1) + ss64[1][:, :, None, None, None]
    ref = F.silu(ref)
    with torch.no_grad():
        fast = group_norm_silu(x.clone(memory_format=torch.channels_last_3d), gn, ss)
    differentiable = group_norm_silu(x, gn, ss).detach()
    assert rel_err(fast, ref) < 5e-6
    assert rel_err(differentiable, ref) < 5e-6


def test_gradients_match_float64_and_reach_the_position_bias():
    net, (x, t, cond) = _net(), _inputs()
    net64 = copy.deepcopy(net).double()
    net(x, t, cond).square().mean().backward()
    net64(x.double(), t, cond.double()).square().mean().backward()
    grads = dict(net.named_parameters())
    for name, p64 in net64.named_parameters():
        if p64.grad is None:  # the null condition, unused when a condition is given
            assert grads[name].grad is None, name
            continue
        assert rel_err(grads[name].grad, p64.grad) < 1e-4, name
    assert net.depth_position_bias.table.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_compiled_denoiser_matches_eager():
    cfg = DenoiserConfig(dim=8, dim_mults=(1, 2), cond_dim=16, attn_heads=2, attn_dim_head=8)
    net, (x, t, cond) = _net(cfg), _inputs()
    with torch.no_grad():
        eager = net(x, t, cond)
        compiled = compile_denoiser(net)(x, t, cond)
    assert rel_err(compiled, eager) < 1e-5
