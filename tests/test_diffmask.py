"""DiffMask: control sphere, sampling (determinism, batching, boundary), post-processing, training
with exact resume, and loading. Tiny models and synthetic sphere masks keep it fast on CPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from lefusion.checkpoints.format import save_checkpoint
from lefusion.config import DenoiserConfig, ModelConfig, ScheduleConfig
from lefusion.diffusion.model import DiffusionModel
from lefusion.errors import LeFusionError
from lefusion.masks.diffmask import (
    control_sphere,
    diffmask_model_config,
    load_diffmask,
    mask_sphere,
    postprocess,
    sample_masks,
    sample_x0,
)
from lefusion.models import Denoiser
from lefusion.training.diffmask import DiffMaskTrainConfig, augment, prepare_masks, train_diffmask
from lefusion.training.state import load_state

BOX = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)


def _equivalent_diameter(mask: np.ndarray) -> float:
    return float((6.0 * mask.sum() / np.pi) ** (1 / 3))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model() -> DiffusionModel:
    torch.manual_seed(1)
    config = diffmask_model_config(TINY, timesteps=8, box=BOX)
    model = DiffusionModel(config=config, denoiser=Denoiser(config.denoiser), extra={"diffmask": {"box": list(BOX)}})
    return model.eval()


def _synthetic_masks(n: int = 6, shape=(12, 20, 20)) -> np.ndarray:
    """Spheres of 3-6 mm around the centre of a larger stored box, like the LIDC npz layout."""
    rng = np.random.default_rng(0)
    centre = np.array([(s - 1) / 2 for s in shape])
    return np.stack([control_sphere(shape, centre + rng.uniform(-1, 1, 3), rng.uniform(3, 6)) for _ in range(n)]).astype(np.uint8)


@pytest.mark.parametrize(
    "shape,centre,diameter,spacing",
    [
        ((32, 32, 32), (15.5, 15.5, 15.5), 3.0, (1, 1, 1)),
        ((32, 32, 32), (15.0, 15.0, 15.0), 4.0, (1, 1, 1)),
        ((32, 32, 32), (12.3, 17.8, 16.1), 9.5, (1, 1, 1)),
        ((24, 40, 40), (10.0, 20.2, 19.7), 20.0, (1, 1, 1)),
        ((16, 40, 40), (8.0, 20.0, 20.0), 12.0, (2.0, 0.8, 0.8)),
    ],
)
def test_control_sphere_size_and_centre(shape, centre, diameter, spacing):
    sphere = control_sphere(shape, centre, diameter, spacing)
    assert sphere.shape == shape and sphere.dtype == bool
    volume = sphere.sum() * np.prod(spacing)
    # Exact volume up to one voxel.
    assert abs(volume - np.pi / 6 * diameter**3) <= 0.5 * np.prod(spacing) + 1e-9
    assert np.allclose(ndimage.center_of_mass(sphere), centre, atol=0.15)
    # Compact: no voxel further from the centre than the radius plus a voxel diagonal.
    mm = (np.argwhere(sphere) - np.asarray(centre)) * np.asarray(spacing)
    assert np.linalg.norm(mm, axis=1).max() <= diameter / 2 + np.linalg.norm(spacing)


def test_control_sphere_clipped_by_array_and_bad_input():
    inside = control_sphere((16, 16, 16), (7.5, 7.5, 7.5), 6.0)
    edge = control_sphere((16, 16, 16), (0.0, 7.5, 7.5), 6.0)
    assert 0 < edge.sum() < inside.sum()  # cut by the array, not re-grown inward
    assert not control_sphere((8, 8, 8), (4, 4, 4), 0.0).any()
    with pytest.raises(LeFusionError):
        control_sphere((8, 8, 8), (4, 4, 4), -1.0)
    with pytest.raises(LeFusionError):
        control_sphere((8, 8), (4, 4), 3.0)


def test_mask_sphere_matches_volume_and_centroid():
    mask = np.zeros((12, 20, 20), bool)
    mask[3:8, 5:14, 6:10] = True  # a box-shaped "lesion"
    sphere = mask_sphere(mask)
    assert sphere.sum() == mask.sum()
    assert np.allclose(ndimage.center_of_mass(sphere), ndimage.center_of_mass(mask), atol=0.15)


def test_sampling_shape_determinism_and_batch_independence(tiny_model):
    kwargs = dict(n=3, diameter_mm=[4.0, 5.0, 6.0], seed=7, smoothing_sigma=0.0)
    a = sample_masks(tiny_model, batch_size=3, **kwargs)
    b = sample_masks(tiny_model, batch_size=3, **kwargs)
    c = sample_masks(tiny_model, batch_size=2, **kwargs)
    assert len(a) == 3 and all(m.shape == BOX and m.dtype == bool for m in a)
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    spheres = np.stack([control_sphere(BOX, (3.5, 7.5, 7.5), d) for d in (4.0, 5.0)])
    raw_1 = sample_x0(tiny_model, spheres, seed=7, batch_size=1)
    raw_2 = sample_x0(tiny_model, spheres, seed=7, batch_size=2)
    torch.testing.assert_close(raw_1, raw_2, atol=1e-4, rtol=0)  # batched BLAS may round differently
    assert raw_1.shape == (2, *BOX) and raw_1.abs().max() <= 1.0
    other = sample_x0(tiny_model, spheres, seed=8, batch_size=2)
    assert not torch.allclose(raw_1, other)  # the seed matters


@pytest.mark.parametrize("mode", ["noised", "hard"])
def test_boundary_respected_by_untrained_model(tiny_model, mode):
    boundary = np.zeros(BOX, bool)
    boundary[:, :, :9] = True  # half-space that cuts the requested spheres
    raw_masks = sample_masks(tiny_model, 4, 8.0, boundary=None, seed=0, smoothing_sigma=0.0, threshold=-1.0)
    assert any((m & ~boundary).any() for m in raw_masks)  # without the boundary they leave it
    masks = sample_masks(tiny_model, 4, 8.0, boundary=boundary, seed=0, boundary_mode=mode, threshold=-1.0)
    assert all(m.any() and not (m & ~boundary).any() for m in masks)
    x0 = sample_x0(tiny_model, np.stack([control_sphere(BOX, (3.5, 7.5, 7.5), 8.0)] * 2), boundary, boundary_mode=mode)
    assert torch.all(x0[:, ~torch.from_numpy(boundary)] == -1.0)  # at every step, so exactly at the end


def test_sampling_rejects_bad_arguments(tiny_model):
    with pytest.raises(LeFusionError):
        sample_masks(tiny_model, 2, [4.0, 5.0, 6.0])
    with pytest.raises(LeFusionError):
        sample_masks(tiny_model, 1, 4.0, boundary=np.ones((4, 4, 4), bool))


def test_postprocess_keeps_sphere_component_and_boundary():
    x0 = -np.ones((12, 24, 24))
    x0[4:8, 4:10, 4:10] = 1.0  # the lesion, under the sphere
    x0[2:10, 14:22, 14:22] = 1.0  # a larger stray component
    x0[10, 2, 20] = 1.0  # a single-voxel speck
    sphere = control_sphere(x0.shape, (5.5, 6.5, 6.5), 4.0)
    out = postprocess(x0, smoothing_sigma=0.5, sphere=sphere)
    assert out[5, 6, 6] and not out[5:8, 15:21, 15:21].any() and not out[10, 2, 20]
    assert postprocess(x0, smoothing_sigma=0.5)[5, 17, 17]  # no sphere: the largest component
    boundary = np.ones(x0.shape, bool)
    boundary[:, :, 7:] = False
    clipped = postprocess(x0, smoothing_sigma=0.5, boundary=boundary, sphere=sphere)
    assert clipped.any() and not (clipped & ~boundary).any()
    assert not postprocess(-np.ones((4, 8, 8))).any()


def test_prepare_masks_counts_and_augment():
    masks = np.zeros((3, 12, 20, 20), np.uint8)
    masks[0, 5:7, 9:11, 9:11] = 1  # centred, fits any crop
    masks[1, 5:7, 1:19, 9:11] = 1  # long in y: cut by a 16-wide crop
    masks[2, 0:3, 9:11, 9:11] = 1  # touches the stored box already
    crop, counts = prepare_masks(masks, (8, 16, 16), "drop")
    assert crop.shape == (1, 8, 16, 16) and crop[0].sum() == 8
    assert counts == {"total": 3, "empty": 0, "clipped_by_box": 2, "touching_border": 2, "used": 1}
    assert prepare_masks(masks, (8, 16, 16), "keep")[1]["used"] == 3
    with pytest.raises(LeFusionError):
        prepare_masks(masks, (16, 16, 16))
    m = np.zeros((4, 6, 6), bool)
    m[1, 0, 1] = True
    out = augment(m, torch.tensor([True, False, True]), 1)
    assert out.sum() == 1 and out[2, 1, 0]  # z flip 1 -> 2, x flip 1 -> 4, rot90 (y, x) = (0, 4) -> (1, 0)


def _train(run_dir, steps, **overrides):
    cfg = DiffMaskTrainConfig(steps=steps, batch_size=2, lr=1e-3, seed=3, box=BOX, save_every=2, device="cpu", **overrides)
    return train_diffmask(_synthetic_masks(), run_dir, cfg, TINY, timesteps=8, progress=False)


def test_train_resume_is_exact_and_checkpoint_loads(tmp_path):
    full = _train(tmp_path / "full", 4)
    _train(tmp_path / "part", 2)  # "killed" after its save at step 2
    resumed = _train(tmp_path / "part", 4)
    a, b = load_diffmask(full), load_diffmask(resumed)
    for (name, p), q in zip(a.denoiser.state_dict().items(), b.denoiser.state_dict().values()):
        assert torch.equal(p, q), name
    assert load_state(tmp_path / "part")["step"] == 4
    log = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,seconds" and [int(r.split(",")[0]) for r in log[1:]] == [0, 1, 2, 3]
    cfg = a.config
    assert (cfg.denoiser.channels, cfg.denoiser.extra_in_channels, cfg.denoiser.cond_dim) == (1, 1, None)
    assert cfg.loss == "global" and cfg.lesion_labels == (1,)
    assert a.extra["diffmask"]["box"] == list(BOX) and a.extra["diffmask"]["data"]["used"] == 6
    masks = sample_masks(a, 2, 5.0, seed=0)  # the exported model samples in its box
    assert all(m.shape == BOX for m in masks)


def test_train_loss_type_matters(tmp_path):
    a = load_diffmask(_train(tmp_path / "a", 2))
    b = load_diffmask(_train(tmp_path / "b", 2, loss_type="l1"))
    assert any(not torch.equal(p, q) for p, q in zip(a.denoiser.parameters(), b.denoiser.parameters()))


def test_load_diffmask_refuses_non_mask_model(tmp_path):
    config = ModelConfig(denoiser=dataclasses.replace(TINY, cond_dim=16), schedule=ScheduleConfig(timesteps=8))
    path = save_checkpoint(tmp_path / "lesion", config, Denoiser(config.denoiser).state_dict())
    with pytest.raises(LeFusionError, match="not a DiffMask"):
        load_diffmask(path)


def test_model_config_forces_layout_and_checks_box():
    cfg = diffmask_model_config(DenoiserConfig(dim=8, dim_mults=(1, 2, 4)), 10, (8, 16, 16))
    assert (cfg.denoiser.channels, cfg.denoiser.extra_in_channels, cfg.denoiser.cond_dim) == (1, 1, None)
    assert cfg.schedule.timesteps == 10 and cfg.preprocess.roi_shape == (8, 16, 16)
    with pytest.raises(LeFusionError):
        diffmask_model_config(DenoiserConfig(dim=8, dim_mults=(1, 2, 4)), 10, (8, 18, 16))


class _ConstantBackground(torch.nn.Module):
    """A 'network' that always outputs -1 (background) for the mask channel."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: None) -> torch.Tensor:
        return torch.full_like(x[:, :1], -1.0)


@pytest.mark.parametrize("prediction,expect_empty", [("x0", True), ("eps", False), ("v", False)])
def test_prediction_flag_decides_how_the_output_is_read(prediction, expect_empty):
    """The same output (-1 everywhere) is 'the mask is background' for an x0 model (empty mask)
    and 'the noise is -1' for an eps model (x0 = (x_t + sqrt(1 - abar)) / sqrt(abar), mostly > 0);
    for a v model x0 = sqrt(abar) x_t + sqrt(1 - abar), which ends near +1 (lesion) as abar -> 1."""
    config = diffmask_model_config(TINY, timesteps=8, box=BOX, prediction=prediction)
    model = DiffusionModel(config=config, denoiser=_ConstantBackground(), extra={"diffmask": {"box": list(BOX)}})
    masks = sample_masks(model, 2, 5.0, seed=0, threshold=0.0)  # a fixed level ("size" fills the request)
    assert all((m.sum() == 0) == expect_empty for m in masks)


def test_unknown_prediction_is_refused(tmp_path):
    config = diffmask_model_config(TINY, timesteps=8, box=BOX)
    with pytest.raises(ValueError, match="prediction"):
        dataclasses.replace(config, prediction="score")
    # a checkpoint written before configs named the prediction keeps it in extra: read there, checked there
    record = {k: v for k, v in config.to_dict().items() if k not in ("kind", "prediction")}
    path = save_checkpoint(tmp_path / "old", config, Denoiser(config.denoiser).state_dict(), {"diffmask": {"prediction": "score"}})
    (path / "config.json").write_text(
        json.dumps({"format": "lefusion", "version": 1, **record, "extra": {"diffmask": {"prediction": "score"}}})
    )
    with pytest.raises(LeFusionError, match="prediction"):
        load_diffmask(path)


def test_prediction_is_recorded_and_changes_training(tmp_path):
    x0 = load_diffmask(_train(tmp_path / "x0", 2))
    eps = load_diffmask(_train(tmp_path / "eps", 2, prediction="eps"))
    v = load_diffmask(_train(tmp_path / "v", 2, prediction="v"))
    assert [m.config.prediction for m in (x0, eps, v)] == ["x0", "eps", "v"]
    for other in (eps, v):
        assert any(not torch.equal(p, q) for p, q in zip(x0.denoiser.parameters(), other.denoiser.parameters()))


def test_size_threshold_matches_requested_volume_on_a_level_set():
    """threshold="size" picks the level whose kept lesion has the sphere's voxel count: on a radial
    ramp the result is the ball of that volume, inside a boundary its clipped volume, and a
    component away from the sphere is never kept."""
    box = (16, 16, 16)
    grid = np.stack(np.meshgrid(*[np.arange(s) - 7.5 for s in box], indexing="ij"))
    ramp = 1.0 - np.sqrt((grid**2).sum(0)) / 6.0  # > 0 inside radius 6, decreasing outwards
    ramp += 1e-6 * np.random.default_rng(0).random(box)  # break the ties within a shell: every count is reachable
    ramp[0:2, 0:2, 0:2] = 1.0  # a bright speck far from the request
    sphere = control_sphere(box, (7.5, 7.5, 7.5), 7.0)
    out = postprocess(ramp, smoothing_sigma=0.0, threshold="size", sphere=sphere)
    assert out.sum() == sphere.sum() and not out[0, 0, 0]
    assert ndimage.label(out)[1] == 1
    fixed = postprocess(ramp, smoothing_sigma=0.0, threshold=0.0, sphere=sphere)
    assert fixed.sum() > 1.5 * sphere.sum()  # the fixed level would have kept the radius-6 ball
    half = np.zeros(box, bool)
    half[:8] = True
    clipped = postprocess(ramp, smoothing_sigma=0.0, threshold="size", boundary=half, sphere=sphere)
    assert not (clipped & ~half).any() and clipped.sum() == (sphere & half).sum()
    assert not postprocess(ramp, threshold="size", sphere=np.zeros(box, bool)).any()
    with pytest.raises(LeFusionError, match="sphere"):
        postprocess(ramp, threshold="size")
    with pytest.raises(LeFusionError, match="'size'"):
        postprocess(ramp, threshold="large", sphere=sphere)


def test_ellipsoid_control_keeps_volume_centroid_and_proportions():
    from lefusion.masks.control_region import control_region, mask_control, mask_form, pack_forms, unpack_form

    box = (24, 24, 24)
    slab = np.zeros(box, bool)
    slab[10:14, 6:18, 9:15] = True  # 4 x 12 x 6 voxels
    region = mask_control(slab, "ellipsoid")
    assert region.sum() == slab.sum()
    np.testing.assert_allclose(ndimage.center_of_mass(region), ndimage.center_of_mass(slab), atol=0.05)
    extent = np.ptp(np.argwhere(region), axis=0) + 1
    assert extent[1] > extent[2] > extent[0]  # the same order of axis lengths as the slab
    sphere = mask_control(slab, "sphere")
    assert sphere.sum() == slab.sum() and len(set(np.ptp(np.argwhere(sphere), axis=0))) == 1
    form = mask_form(slab)
    assert np.isclose(np.linalg.det(form), 1.0) and np.allclose(unpack_form(pack_forms([form])[0]), form, atol=1e-5)
    one_voxel = np.zeros(box, bool)
    one_voxel[3, 3, 3] = True
    assert np.allclose(mask_form(one_voxel), np.eye(3))  # a single voxel is a unit cube: isotropic
    with pytest.raises(LeFusionError, match="positive definite"):
        control_region(box, (12, 12, 12), 5.0, form=np.diag([1.0, 1.0, -1.0]))


def test_ellipsoid_model_records_forms_and_samples_them(tmp_path):
    """A model trained with control="ellipsoid" stores its training lesions' forms, and sampling
    draws one per request (seeded); the regions keep the requested volume."""
    from lefusion.masks.diffmask import control_regions

    model = load_diffmask(_train(tmp_path / "ell", 2, control="ellipsoid"))
    assert model.extra["diffmask"]["control"] == "ellipsoid" and len(model.extra["diffmask"]["control_forms"]) == 6
    centres, diameters = [(3.5, 7.5, 7.5)] * 3, [5.0] * 3
    regions = control_regions(model, BOX, centres, diameters, seed=4)
    assert np.array_equal(regions, control_regions(model, BOX, centres, diameters, seed=4))
    assert all(r.sum() == control_sphere(BOX, c, d).sum() for r, c, d in zip(regions, centres, diameters))
    masks = sample_masks(model, 3, 5.0, seed=4)
    assert [m.shape for m in masks] == [BOX] * 3
    with pytest.raises(ValueError, match="control"):
        DiffMaskTrainConfig(control="cube")
