"""Lesion-DDPM's network and loss: the condition reaches every level, the lesion weighting, shapes."""

from __future__ import annotations

import pytest
import torch

from lefusion.config import DenoiserConfig, ModelConfig, VolumeConfig
from lefusion.diffusion.lesion_ddpm import lesion_weights, weighted_l1
from lefusion.models import VolumeUNet, build_network
from lefusion.models.volume_unet import resize_condition
from lefusion.training.volume_run import lesion_ddpm_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = DenoiserConfig(
    dim=8, dim_mults=(1, 2, 2), channels=1, cond_dim=None, attn_heads=2, attn_dim_head=8, resnet_groups=4, extra_in_channels=4
)


def _net() -> VolumeUNet:
    torch.manual_seed(0)
    return VolumeUNet(TINY).eval()


def _inputs(shape=(8, 12, 8)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, *shape, generator=g)
    cond = (torch.rand(2, 4, *shape, generator=g) > 0.5).float() * 2 - 1
    return x, cond, torch.tensor([3, 17])


def test_output_shape_and_channel_check() -> None:
    net = _net()
    x, cond, t = _inputs()
    assert net(torch.cat((x, cond), 1), t).shape == (2, 1, 8, 12, 8)
    with pytest.raises(ValueError, match="input channels"):
        net(x, t)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.cat((x, cond), 1)[..., :6], t)


def _activations(net: VolumeUNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output of every block: encoder levels, bottleneck, decoder levels."""
    out: dict[str, torch.Tensor] = {}
    blocks = {f"encoder{i}": b for i, b in enumerate(net.encoder)} | {"middle1": net.middle1, "middle2": net.middle2}
    blocks |= {f"decoder{i}": b for i, b in enumerate(net.decoder)}
    hooks = [b.register_forward_hook(lambda _m, _i, o, k=k: out.__setitem__(k, o.detach().clone())) for k, b in blocks.items()]
    with torch.no_grad():
        net(x, torch.tensor([3, 17]))
    for h in hooks:
        h.remove()
    return out


def test_condition_is_injected_at_every_level() -> None:
    """Changing only the lesion channel changes every block's output, and every block's own
    condition input is the mask at that block's resolution (hooked on the concatenation)."""
    net = _net()
    x, cond, _ = _inputs()
    other = cond.clone()
    other[:, -1] = -other[:, -1]
    a, b = _activations(net, torch.cat((x, cond), 1)), _activations(net, torch.cat((x, other), 1))
    assert len(a) == 3 + 2 + 3
    for name in a:
        assert not torch.allclose(a[name], b[name]), f"{name} does not see the lesion mask"
    # every block's first convolution gets, as its last 4 input channels, the condition pooled to its resolution
    blocks = [*net.encoder, net.middle1, net.middle2, *net.decoder]
    seen: list[torch.Tensor] = []
    hooks = [blk.conv1.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone())) for blk in blocks]
    with torch.no_grad():
        net(torch.cat((x, cond), 1), torch.tensor([3, 17]))
    for h in hooks:
        h.remove()
    shapes = [(8, 12, 8), (4, 6, 4), (2, 3, 2), (2, 3, 2), (2, 3, 2), (2, 3, 2), (4, 6, 4), (8, 12, 8)]
    assert [tuple(s.shape[2:]) for s in seen] == shapes
    for inp, shape in zip(seen, shapes):
        torch.testing.assert_close(inp[:, -4:], resize_condition(cond, shape))


def test_bottleneck_sees_the_mask_directly() -> None:
    """Not only through the encoder: with the encoder's output held fixed, a mask change still
    changes the bottleneck and decoder (they take the mask as input themselves)."""
    net = _net()
    x, cond, t = _inputs()
    c2 = cond.clone()
    c2[:, -1] = -c2[:, -1]
    h = torch.randn(2, 16, 2, 3, 2)
    emb = net.time_embedding(t)
    with torch.no_grad():
        m1 = net.middle1(h, resize_condition(cond, (2, 3, 2)), emb)
        m2 = net.middle1(h, resize_condition(c2, (2, 3, 2)), emb)
    assert not torch.allclose(m1, m2)


def test_lesion_weighting() -> None:
    """A lesion voxel weighs lambda + 1 times a background voxel; no weight is zero; normalised."""
    lesion = torch.zeros(1, 1, 2, 2, 2)
    lesion[0, 0, 0, 0, 0] = 1
    w = lesion_weights(lesion, 4.0)
    assert w[0, 0, 0, 0, 0] == 5.0 and (w[lesion == 0] == 1.0).all() and (w > 0).all()
    pred, target = torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)
    err_lesion = pred.clone()
    err_lesion[0, 0, 0, 0, 0] = 1.0  # error 1 at the lesion voxel only
    err_bg = pred.clone()
    err_bg[0, 0, 1, 1, 1] = 1.0  # error 1 at one background voxel
    assert weighted_l1(err_lesion, target, w).item() == pytest.approx(5.0 / 12.0)
    assert weighted_l1(err_bg, target, w).item() == pytest.approx(1.0 / 12.0)
    assert weighted_l1(err_lesion, target, w) / weighted_l1(err_bg, target, w) == pytest.approx(5.0)
    # lambda = 0 is plain L1; a uniform error costs the same whatever the lesion load
    assert weighted_l1(torch.ones(1, 1, 2, 2, 2), target, lesion_weights(lesion, 0.0)).item() == pytest.approx(1.0)
    assert weighted_l1(torch.ones(1, 1, 2, 2, 2), target, w).item() == pytest.approx(1.0)


def test_config_round_trip_and_network_kind() -> None:
    config = lesion_ddpm_config(VolumeConfig(volume_shape=(8, 12, 8)), TINY)
    assert config.denoiser.extra_in_channels == 4 and config.kind == "lesion-ddpm"
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert isinstance(build_network(config), VolumeUNet)
    brain_only = lesion_ddpm_config(VolumeConfig(volume_shape=(8, 12, 8), anatomy_labels=()), TINY)
    assert brain_only.denoiser.extra_in_channels == 2
    with pytest.raises(ValueError, match="volume settings"):
        ModelConfig(kind="lefusion", volume=VolumeConfig())
    with pytest.raises(Exception, match="divisible"):
        lesion_ddpm_config(VolumeConfig(volume_shape=(9, 12, 8)), TINY)


def test_loss_is_a_batch_mean_so_data_parallel_slices_add_up() -> None:
    """DDP exactness (training/distributed.py) needs the loss to be a mean of per-sample terms: the
    loss of a batch is the size-weighted mean of its slices' losses, also for unequal lesion loads
    (a weight sum normalised over the whole batch would fail this)."""
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(3, 1, 4, 4, 4, generator=g), torch.randn(3, 1, 4, 4, 4, generator=g)
    lesion = torch.zeros(3, 1, 4, 4, 4)
    lesion[0, :, :2] = 1  # half the volume
    lesion[2, :, 0, 0, 0] = 1  # one voxel; sample 1 none
    w = lesion_weights(lesion, 9.0)
    whole = weighted_l1(pred, target, w)
    parts = (1 / 3) * weighted_l1(pred[:1], target[:1], w[:1]) + (2 / 3) * weighted_l1(pred[1:], target[1:], w[1:])
    torch.testing.assert_close(whole, parts)


def test_volume_batch_slice_is_the_slice_of_the_global_batch() -> None:
    from lefusion.data.volume_dataset import WholeVolumeDataset
    from lefusion.training.batches import VolumeBatchDraw
    from lefusion.training.session import step_generator

    g = torch.Generator().manual_seed(0)
    data = WholeVolumeDataset(
        VolumeConfig(volume_shape=(4, 4, 4)),
        list("abc"),
        torch.randn(3, 1, 4, 4, 4, generator=g),
        torch.randn(3, 4, 4, 4, 4, generator=g),
        torch.rand(3, 1, 4, 4, 4, generator=g),
    )
    full = VolumeBatchDraw(data, 4, 10)(step_generator(0, 5))
    part = VolumeBatchDraw(data, 4, 10, slice(2, 4))(step_generator(0, 5))
    for key, value in part.items():
        torch.testing.assert_close(value, full[key][2:4])
    flipped = [i for i in range(4) if not any(torch.equal(full["x"][i], data.x[j]) for j in range(3))]
    assert flipped and all(any(torch.equal(full["x"][i], data.x[j].flip(-1)) for j in range(3)) for i in flipped)
