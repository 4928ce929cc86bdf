"""Few-step samplers through the jobs that use them: `generate` (manifest records the sampler and
the evaluations the network actually made), the Python API, the CLI flags (--sampler, --steps),
Cond-Diffusion (no known region) and DiffMask's `masks sample`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lefusion
from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.cli.common import add_sampler_args, sampler_from_args
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.conditional import sample_cond_diffusion
from lefusion.diffusion.model import DiffusionModel
from lefusion.diffusion.sampling import DDIM, DDNM, DEFAULT_FEW_STEP, DiffPIR, TimeTravel
from lefusion.errors import LeFusionError
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.io import read_volume
from lefusion.masks.diffmask import diffmask_model_config
from lefusion.masks.mask_dataset import write_diffmask_dataset
from lefusion.models import Denoiser
from lefusion.phantoms import write_lung_phantom

pytestmark = pytest.mark.usefixtures("one_thread")
ROI = (8, 16, 16)
TINY = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
T = 10


class Calls:
    """Counts forward calls of a module (each call evaluates the whole batch once)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *_) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, lefusion.LeFusionModel]:
    root = tmp_path_factory.mktemp("s")
    write_lung_phantom(root / "lung", n_pathological=0, n_normal=2, n_test=0, seed=0, roi_shape=ROI, spacing=(2.0, 2.0, 2.0))
    config = ModelConfig(
        denoiser=TINY,
        schedule=ScheduleConfig(timesteps=T),
        preprocess=PreprocessConfig(roi_shape=ROI),
        hist_presets=(tuple([1 / 16] * 16),),
    )
    torch.manual_seed(0)
    folder = save_model(DiffusionModel(config, Denoiser(config.denoiser)), root / "model")
    return root / "lung", folder, lefusion.load(folder)


@pytest.mark.parametrize("sampler", [DDNM(3), DDIM(4, 1, 2), DiffPIR(2, zeta=1.0)], ids=repr)
def test_manifest_reports_the_evaluations_the_network_made(setup, tmp_path, sampler):
    lung, _, model = setup
    config = GenerateConfig(presets=("1",), sampler=sampler, batch_size=1, previews=False)
    with Calls(model.denoiser) as calls:
        manifest = json.loads(generate_dataset(model, lung, tmp_path / "out", config, progress=False).read_text())
    entries = list(manifest["outputs"].values())
    assert len(entries) == 2 and manifest["settings"]["sampler"] == sampler.to_dict()
    for entry in entries:
        assert entry["sampler"] == sampler.to_dict()
        assert entry["network_evaluations"] == sampler.network_evaluations(T)
    assert calls.n == sum(e["network_evaluations"] for e in entries)  # batch 1: one call per evaluation per output
    # the pipeline checked the background bit for bit; check it once more on the files
    for entry in entries:
        new, old = read_volume(tmp_path / "out" / entry["image"]).array, read_volume(entry["source_image"]).array
        lesion = read_volume(tmp_path / "out" / entry["label"]).array > 0
        assert np.array_equal(new[~lesion], old[~lesion]) and not np.array_equal(new[lesion], old[lesion])


def test_python_api_few_step_gives_the_voxels_generate_writes(setup, tmp_path):
    lung, _, model = setup
    config = GenerateConfig(presets=("1",), seed=3, sampler=DDNM(4), batch_size=1, previews=False)
    manifest = json.loads(generate_dataset(model, lung, tmp_path / "out", config, progress=False).read_text())
    for entry in manifest["outputs"].values():
        api = model.inpaint(entry["source_image"], entry["source_mask"], preset="1", seed=3, sampler=DDNM(4))
        assert (api == read_volume(tmp_path / "out" / entry["image"]).array).all()


def flags(*argv: str):
    p = argparse.ArgumentParser()
    add_sampler_args(p, "x")
    return sampler_from_args(p.parse_args(list(argv)))


def test_sampler_flags():
    assert flags() is None
    assert flags("--sampler", "ddnm", "--steps", "10") == DDNM(10)
    assert flags("--sampler", "ddim", "--steps", "10", "--eta", "0.5", "--jump-length", "2", "--jump-n-sample", "2") == DDIM(10, 2, 2, 0.5)
    assert flags("--sampler", "diffpir", "--zeta", "1") == DiffPIR(zeta=1.0)
    assert flags("--steps", "7") == type(DEFAULT_FEW_STEP)(steps=7)
    assert flags("--jump-length", "5", "--jump-n-sample", "5") == TimeTravel(5, 5)  # as before: the published sampler
    assert flags("--sampler", "time-travel") == TimeTravel(10, 10)
    for bad in (("--sampler", "ancestral", "--steps", "10"), ("--sampler", "ddim", "--zeta", "1"), ("--steps", "0")):
        with pytest.raises(LeFusionError):
            flags(*bad)


def test_generate_cli_with_steps(setup, tmp_path, capsys):
    lung, folder, _ = setup
    argv = ["generate", "--checkpoint", str(folder), "--data", str(lung), "--preset", "1", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--sampler", "ddnm", "--steps", "3"]) == 0
    entry = next(iter(json.loads((tmp_path / "a" / "manifest.json").read_text())["outputs"].values()))
    assert entry["sampler"]["kind"] == "ddnm" and entry["sampler"]["steps"] == 3 and entry["network_evaluations"] == 3
    assert main([*argv, "--out", str(tmp_path / "b"), "--sampler", "time-travel"]) == 0  # the published settings, one flag away
    entry = next(iter(json.loads((tmp_path / "b" / "manifest.json").read_text())["outputs"].values()))
    assert entry["sampler"] == TimeTravel(10, 10).to_dict() and entry["network_evaluations"] == TimeTravel(10, 10).network_evaluations(T)
    assert main([*argv, "--out", str(tmp_path / "c"), "--sampler", "ancestral", "--steps", "3"]) == 2
    assert "has no setting" in capsys.readouterr().err


def test_cond_diffusion_samples_with_a_few_step_sampler():
    """No known region: the whole ROI is generated, the evaluations are the steps."""
    torch.manual_seed(0)
    denoiser = Denoiser(DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, extra_in_channels=2)).eval()
    from lefusion.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule(ScheduleConfig(timesteps=T))
    image = torch.rand(2, 1, *ROI) * 2 - 1
    label = torch.zeros(2, 1, *ROI, dtype=torch.long)
    label[:, :, 3:5, 6:10, 6:10] = 1
    for sampler in (DDNM(3), DiffPIR(3), DDIM(3, 1, 2)):
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        with Calls(denoiser) as calls:
            x = sample_cond_diffusion(denoiser, schedule, image, label, (1,), None, gens, sampler=sampler)
        assert x.shape == image.shape and torch.isfinite(x).all() and calls.n == sampler.network_evaluations(T)


def test_masks_sample_records_the_evaluations_made(tmp_path):
    box = (8, 16, 16)
    torch.manual_seed(1)
    config = diffmask_model_config(TINY, timesteps=8, box=box)
    model = DiffusionModel(config=config, denoiser=Denoiser(config.denoiser), extra={"diffmask": {"box": list(box)}}).eval()
    sampler = DDNM(3)
    with Calls(model.denoiser) as calls:
        meta = json.loads(write_diffmask_dataset(model, tmp_path / "m", 3, 4.0, batch_size=2, sampler=sampler).read_text())
    assert meta["sampler"] == sampler.to_dict() and meta["network_evaluations"] == 3
    assert [s["network_evaluations"] for s in meta["samples"]] == [3, 3, 3]
    assert calls.n == 3 * 2  # two batches (2 + 1 masks), three evaluations each
    assert all(s["voxels"] > 0 for s in meta["samples"])
