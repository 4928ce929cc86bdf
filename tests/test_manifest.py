"""Output folders resume under the same settings, also folders written before samplers had their
own record, and refuse other settings with a message that names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lefusion
from lefusion.checkpoints import save_model
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.model import DiffusionModel
from lefusion.diffusion.sampling import Ancestral, TimeTravel
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.generation.manifest import upgrade_settings
from lefusion.io import read_volume
from lefusion.models import Denoiser
from lefusion.phantoms import write_lung_phantom

pytestmark = pytest.mark.usefixtures("one_thread")
ROI = (8, 16, 16)

# Settings as manifests written before this change record them (copied from real runs).
LEGACY_LEFUSION = {
    "data": "d",
    "checkpoint": "c",
    "checkpoint_sha256": "s",
    "presets": ["1", "2", "3"],
    "seed": 0,
    "jump_length": 1,
    "jump_n_sample": 1,
}
LEGACY_COND = {
    "data": "d",
    "method": "cond-diffusion",
    "checkpoint": "c",
    "checkpoint_sha256": "s",
    "presets": ["1", "3"],
    "seed": 3,
    "jump_length": 10,
    "jump_n_sample": 10,
}
LEGACY_COPY_PASTE = {
    "data": "d",
    "method": "copy-paste",
    "donors": "d",
    "donor_lesions": 5,
    "texture_presets": [],
    "presets": ["mix"],
    "seed": 1,
    "jump_length": 10,
    "jump_n_sample": 10,
}


def test_legacy_settings_read_as_the_sampler_they_meant():
    lefusion_new = upgrade_settings(LEGACY_LEFUSION)
    assert lefusion_new["sampler"] == {"kind": "ancestral"} and "jump_length" not in lefusion_new
    assert upgrade_settings({**LEGACY_LEFUSION, "jump_length": 10, "jump_n_sample": 10})["sampler"] == TimeTravel(10, 10).to_dict()
    assert upgrade_settings(LEGACY_COND)["sampler"] == {"kind": "ancestral"}, "Cond-Diffusion ignored the jump settings"
    baseline = upgrade_settings(LEGACY_COPY_PASTE)
    assert "sampler" not in baseline and "jump_n_sample" not in baseline, "baselines do not sample"
    current = {**lefusion_new}
    assert upgrade_settings(current) == current


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, lefusion.LeFusionModel]:
    root = tmp_path_factory.mktemp("m")
    write_lung_phantom(root / "lung", n_pathological=0, n_normal=2, n_test=0, seed=0, roi_shape=ROI, spacing=(2.0, 2.0, 2.0))
    config = ModelConfig(
        denoiser=DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8),
        schedule=ScheduleConfig(timesteps=4),
        preprocess=PreprocessConfig(roi_shape=ROI),
        hist_presets=(tuple([1 / 16] * 16),),
    )
    torch.manual_seed(0)
    folder = save_model(DiffusionModel(config, Denoiser(config.denoiser)), root / "model")
    return root / "lung", lefusion.load(folder)


def _as_legacy(manifest_path: Path, jump_length: int, jump_n_sample: int) -> None:
    manifest = json.loads(manifest_path.read_text())
    settings = {k: v for k, v in manifest["settings"].items() if k != "sampler"}
    manifest["settings"] = {**settings, "jump_length": jump_length, "jump_n_sample": jump_n_sample}
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("old,new", [((2, 2), TimeTravel(2, 2)), ((1, 1), Ancestral()), ((3, 1), TimeTravel(2, 1))])
def test_a_folder_from_before_resumes_without_regenerating(setup, tmp_path, old, new):
    lung, model = setup
    config = GenerateConfig(presets=("1",), sampler=TimeTravel(*old), batch_size=2, previews=False)
    manifest_path = generate_dataset(model, lung, tmp_path / "out", config, progress=False)
    _as_legacy(manifest_path, *old)
    images = sorted((tmp_path / "out" / "images").glob("*.nii.gz"))
    stamps = [p.stat().st_mtime_ns for p in images]
    generate_dataset(model, lung, tmp_path / "out", GenerateConfig(presets=("1",), sampler=new, previews=False), progress=False)
    assert [p.stat().st_mtime_ns for p in images] == stamps, "finished outputs were generated again"
    settings = json.loads(manifest_path.read_text())["settings"]
    assert settings["sampler"] == new.canonical().to_dict() and "jump_length" not in settings


def test_other_settings_are_refused_by_name(setup, tmp_path):
    lung, model = setup
    config = GenerateConfig(presets=("1",), sampler=TimeTravel(2, 2), previews=False)
    manifest_path = generate_dataset(model, lung, tmp_path / "out", config, progress=False)
    _as_legacy(manifest_path, 2, 2)
    with pytest.raises(lefusion.LeFusionError, match=r"other settings \(sampler: .*jump_n_sample.: 2.* there, .*jump_n_sample.: 3"):
        generate_dataset(model, lung, tmp_path / "out", GenerateConfig(presets=("1",), sampler=TimeTravel(2, 3)), progress=False)
    with pytest.raises(lefusion.LeFusionError, match=r"other settings \(seed: 0 there, 1 now\)"):
        generate_dataset(model, lung, tmp_path / "out", GenerateConfig(presets=("1",), seed=1, sampler=TimeTravel(2, 2)), progress=False)


def test_manifest_records_the_sampler_and_its_network_evaluations(setup, tmp_path):
    lung, model = setup
    config = GenerateConfig(presets=("1",), sampler=TimeTravel(2, 2), previews=False)
    manifest = json.loads(generate_dataset(model, lung, tmp_path / "out", config, progress=False).read_text())
    evaluations = TimeTravel(2, 2).network_evaluations(4)
    assert evaluations == 6  # T = 4: 4 steps down, one jump of 2 back up and down again
    for entry in manifest["outputs"].values():
        assert entry["sampler"] == {"kind": "time-travel", "jump_length": 2, "jump_n_sample": 2}
        assert entry["network_evaluations"] == evaluations


def test_python_api_gives_the_voxels_generate_writes(setup, tmp_path):
    """`model.inpaint(file, mask, seed=s)` and `generate --seed s` (batch 1) agree voxel for voxel."""
    lung, model = setup
    config = GenerateConfig(presets=("1", "mix"), seed=7, sampler=TimeTravel(2, 2), batch_size=1, previews=False)
    manifest = json.loads(generate_dataset(model, lung, tmp_path / "out", config, progress=False).read_text())
    assert len(manifest["outputs"]) == 4
    for entry in manifest["outputs"].values():
        written = read_volume(tmp_path / "out" / entry["image"]).array
        api = model.inpaint(entry["source_image"], entry["source_mask"], preset=entry["condition"], seed=7, sampler=TimeTravel(2, 2))
        assert api.dtype == written.dtype and (api == written).all(), entry["image"]
        other = model.inpaint(entry["source_image"], entry["source_mask"], preset=entry["condition"], seed=8, sampler=TimeTravel(2, 2))
        assert not (other == written).all()
