"""Golden-value tests against the public LeFusion implementation (../shared/reference, see its README)."""

from __future__ import annotations

import json

import pytest
import torch

import lefusion
from lefusion.data.labels import class_masks
from lefusion.diffusion.losses import diffusion_loss
from lefusion.diffusion.process import renoise
from lefusion.diffusion.sampling import Ancestral, KnownRegion, Network, reverse_step
from lefusion.diffusion.sampling.time_travel import count_network_evaluations, jump_schedule
from lefusion.diffusion.schedule import NoiseSchedule

from .conftest import load_golden, rel_err

CASES = {"lidc_tiny": (1,), "emidec_tiny": (3, 4)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, reference_dir):
    name = request.param
    model = lefusion.load(reference_dir / f"{name}_checkpoint.pt")
    return name, CASES[name], model, reference_dir


def test_checkpoint_architecture_matches_reference_config(case):
    name, _, model, ref = case
    spec = json.loads((ref / f"{name}.json").read_text())
    cfg = model.config.denoiser
    assert (cfg.dim, list(cfg.dim_mults), cfg.channels, cfg.cond_dim) == (
        spec["dim"],
        spec["dim_mults"],
        spec["channels"],
        spec["cond_dim"],
    )
    assert sum(p.numel() for p in model.denoiser.parameters()) == spec["n_params"]
    assert model.config.schedule.timesteps == spec["timesteps"]


def test_forward_matches_reference(case):
    name, _, model, ref = case
    g = load_golden(ref, f"{name}_forward.pt")
    with torch.no_grad():
        out = model.denoiser(g["x"], g["t"], g["cond"])
    assert out.shape == g["out"].shape
    assert rel_err(out, g["out"]) < 1e-5


def test_schedule_matches_reference(case):
    name, _, _, ref = case
    g = load_golden(ref, f"{name}_schedule.pt")
    schedule = NoiseSchedule()
    assert set(g) == {name for name, _ in schedule.named_buffers()}
    for key, value in g.items():
        assert rel_err(getattr(schedule, key), value) < 1e-6, key


def test_lesion_focused_loss_matches_reference(case):
    name, labels, model, ref = case
    g = load_golden(ref, f"{name}_loss.pt")
    masks = class_masks(g["mask"][:, :1].long(), labels)  # the label map is repeated over channels
    with torch.no_grad():
        loss = diffusion_loss(model.denoiser, model.schedule, g["x0"], g["t"], g["noise"], g["cond"], masks)
    assert abs(loss.item() - g["loss"].item()) <= 1e-6 * abs(g["loss"].item())


def test_background_preserving_step_and_renoise_match_reference(case):
    name, labels, model, ref = case
    g = load_golden(ref, f"{name}_repaint_step.pt")
    lesion = class_masks(g["gt_keep_mask"].long(), labels).sum(1, keepdim=True) > 0
    draws = iter([g["noise_gt"], g["noise_sample"]])  # the loop draws the known region's noise, then the step's
    with torch.no_grad():
        x_prev, _ = reverse_step(
            Ancestral(),
            Network(model.denoiser, g["cond"]),
            model.schedule,
            g["x_t"],
            g["t"],
            int(g["t"][0]) - 1,
            KnownRegion(g["gt"], lesion),
            lambda shape: next(draws),
        )
    assert rel_err(x_prev, g["x_prev"]) < 1e-5
    x_undo = renoise(model.schedule, g["x_prev"], g["undo_t"], g["undo_noise"])
    assert rel_err(x_undo, g["x_undo"]) < 1e-5


def test_jump_schedules_match_reference(reference_dir):
    golden = json.loads((reference_dir / "jump_schedules.json").read_text())
    evaluations = {"1_1": 300, "2_2": 598, "5_5": 1480, "10_10": 2910}
    for key, times in golden.items():
        length, n_sample = map(int, key.split("_"))
        ours = jump_schedule(300, length, n_sample)
        assert ours == times, key
        assert count_network_evaluations(ours) == evaluations[key]
