"""Property tests: the invariants the design relies on, on tiny random models."""

from __future__ import annotations

import torch

from lefusion.config import DenoiserConfig, ScheduleConfig
from lefusion.data.labels import class_masks
from lefusion.diffusion.inpainting import inpaint_lesions
from lefusion.diffusion.losses import lesion_focused_loss
from lefusion.diffusion.process import predict_x0, predict_x0_from_v, q_sample, velocity
from lefusion.diffusion.sampling import TimeTravel
from lefusion.diffusion.schedule import NoiseSchedule, cosine_betas, schedule_tables
from lefusion.models import Denoiser

TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), channels=1, cond_dim=16, attn_heads=2, attn_dim_head=8)


def test_schedule_finite_and_monotone():
    for steps in (10, 300, 1000):
        tables = schedule_tables(cosine_betas(steps))
        for name, table in tables.items():
            assert torch.isfinite(table).all(), name
        betas, abar = tables["betas"], tables["alphas_cumprod"]
        assert (betas > 0).all() and (betas <= 0.9999).all()
        assert (abar[1:] < abar[:-1]).all(), "abar must fall strictly"
        assert (tables["posterior_variance"] >= 0).all()


def test_v_and_eps_parameterisations_recover_the_same_x0():
    """x_t from eq. 4; the true v and the true eps must both give back x0 at every step."""
    schedule = NoiseSchedule(ScheduleConfig(timesteps=50))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((50, 1, 2, 3, 3), generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.arange(50)
    x_t = q_sample(schedule, x0, t, noise)
    assert torch.allclose(predict_x0_from_v(schedule, x_t, t, velocity(schedule, x0, t, noise)), x0, atol=1e-5)
    assert torch.allclose(predict_x0(schedule, x_t[:40], t[:40], noise[:40]), x0[:40], atol=1e-4)
    # v is neither target: at the first step it is mostly eps, at the last mostly -x0
    v = velocity(schedule, x0, t, noise)
    assert torch.allclose(v[0], noise[0], atol=0.05) and torch.allclose(v[-1], -x0[-1], atol=0.05)


def test_lesion_focused_loss_blind_outside_lesion():
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 2, 4, 8, 8, generator=gen)
    pred = torch.randn(2, 2, 4, 8, 8, generator=gen)
    label = torch.zeros(2, 1, 4, 8, 8, dtype=torch.long)
    label[:, :, 1:3, 2:5, 2:5] = 3
    label[:, :, 1:3, 5:7, 5:7] = 4
    masks = class_masks(label, (3, 4))
    before = lesion_focused_loss(pred, noise, masks)
    changed = pred.clone()
    outside = masks == 0
    changed[outside] += 100 * torch.randn(int(outside.sum()), generator=gen)
    assert torch.equal(lesion_focused_loss(changed, noise, masks), before)
    changed[masks > 0] += 1.0  # ...but it does see the lesion
    assert lesion_focused_loss(changed, noise, masks) != before


def test_class_channel_sees_only_its_own_class():
    noise = torch.zeros(1, 2, 2, 4, 4)
    pred = torch.zeros(1, 2, 2, 4, 4)
    label = torch.zeros(1, 1, 2, 4, 4, dtype=torch.long)
    label[..., 0, 0] = 3
    label[..., 1, 1] = 4
    masks = class_masks(label, (3, 4))
    pred[:, 0][label[:, 0] == 4] = 5.0  # channel 0 wrong where class 4 lives: not channel 0's business
    assert lesion_focused_loss(pred, noise, masks) == 0


def _tiny_inpaint(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = Denoiser(TINY).eval()
    schedule = NoiseSchedule(ScheduleConfig(timesteps=12))
    image = torch.rand(1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    label = torch.zeros(1, 1, 4, 8, 8, dtype=torch.long)
    label[..., 1:3, 2:6, 2:6] = 1
    out = inpaint_lesions(
        net,
        schedule,
        image,
        label,
        (1,),
        torch.full((1, 16), 1 / 16),
        torch.Generator().manual_seed(seed),
        sampler=TimeTravel(3, 2),
    )
    return image, label, out


def test_inpainting_keeps_background_bit_exact_and_changes_lesion():
    image, label, out = _tiny_inpaint(seed=0)
    background = label == 0
    assert torch.equal(out[background], image[background])
    assert not torch.equal(out[~background], image[~background])
    assert torch.isfinite(out).all() and out[~background].abs().max() <= 1.0


def test_same_seed_same_output_different_seed_different_output():
    _, _, a = _tiny_inpaint(seed=5)
    _, _, b = _tiny_inpaint(seed=5)
    _, _, c = _tiny_inpaint(seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_null_condition_used_when_cond_is_none():
    torch.manual_seed(0)
    net = Denoiser(TINY).eval()
    x = torch.randn(2, 1, 4, 8, 8)
    t = torch.tensor([3, 7])
    with torch.no_grad():
        assert torch.equal(net(x, t, None), net(x, t, net.null_cond.expand(2, -1)))
        # a single condition vector broadcasts over the batch
        cond = torch.rand(16)
        assert torch.allclose(net(x, t, cond), net(x, t, cond.expand(2, -1)))
