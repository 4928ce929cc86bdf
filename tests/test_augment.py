"""`lefusion augment`: whole scans in, augmented whole scans with full label maps out; resumable;
nnU-Net raw export; the background of every scan bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.checkpoints import save_model
from lefusion.cli import main
from lefusion.config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig
from lefusion.diffusion.model import DiffusionModel
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.models import Denoiser

pytestmark = pytest.mark.usefixtures("one_thread")
C, S = np.cos(np.radians(10)), np.sin(np.radians(10))
GEOMETRY = Geometry(spacing=(2.5, 0.8, 0.8), origin=(-50.0, 20.0, -100.0), direction=(C, 0.0, S, 0.0, 1.0, 0.0, -S, 0.0, C))
SHAPE = (30, 120, 130)


def _organ() -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    return ((((grid - (15, 60, 65)) / (12, 50, 55)) ** 2).sum(-1) <= 1).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    organ = _organ()
    existing = np.zeros(SHAPE, np.uint8)
    existing[14:17, 30:36, 60:66] = 1  # scan "b" has a real lesion already
    for name in ("a", "b"):
        image = (np.where(organ > 0, -850, 40) + rng.integers(-30, 30, SHAPE)).astype(np.int16)
        write_volume(Volume(image, GEOMETRY), root / "scans" / "images" / f"{name}.nii.gz")
        write_volume(Volume(existing if name == "b" else np.zeros(SHAPE, np.uint8), GEOMETRY), root / "scans" / "masks" / f"{name}.nii.gz")
        write_volume(Volume(organ, GEOMETRY), root / "organs" / f"{name}.nii.gz")
    config = ModelConfig(
        denoiser=DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8),
        schedule=ScheduleConfig(timesteps=3),
        preprocess=PreprocessConfig(roi_shape=(8, 16, 16), spacing=(1.5, 1.5, 1.5)),
        hist_presets=(tuple([1 / 16] * 16),),
    )
    torch.manual_seed(0)
    model = save_model(DiffusionModel(config, Denoiser(config.denoiser)), root / "model")
    return root / "scans", root / "organs", model


def _args(setup, out: Path, *extra: str) -> list[str]:
    scans, organs, model = setup
    return [
        "augment",
        "--scans",
        str(scans),
        "--out",
        str(out),
        "--checkpoint",
        str(model),
        "--organ-masks",
        str(organs),
        "--lesions",
        "2",
        "--diameter",
        "5:8",
        "--shapes",
        "handcrafted",
        "--preset",
        "1",
        "--sampler",
        "ancestral",
        *extra,
    ]


def test_augment_writes_whole_scans_with_full_label_maps(setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(setup, out, "--nnunet-id", "502", "--name", "Aug")) == 0
    assert "2 augmented scan(s), 4 new lesion(s)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["outputs"]) == ["a", "b"]
    scans = setup[0]
    for name, entry in manifest["outputs"].items():
        source = read_volume(scans / "images" / f"{name}.nii.gz")
        image, label = read_volume(out / entry["image"]), read_volume(out / entry["label"])
        assert image.geometry.matches(GEOMETRY) and label.geometry.matches(GEOMETRY) and image.array.dtype == np.int16
        existing = read_volume(scans / "masks" / f"{name}.nii.gz").array > 0
        new = (label.array > 0) & ~existing
        assert np.array_equal(image.array[~new], source.array[~new]), "every voxel but the new lesions' stays the source's"
        assert not np.array_equal(image.array[new], source.array[new])
        assert (label.array[existing] == 1).all(), "existing lesion labels are kept"
        assert entry["existing_lesions"] == int(name == "b") and len(entry["lesions"]) == 2
        for lesion in entry["lesions"]:
            assert lesion["placement"]["shape"]["source"] == "handcrafted" and lesion["box"]["shape_zyx"] == [8, 16, 16]
            assert lesion["resampling"] == {"image": "linear", "mask": "volume"} and lesion["sampler"] == {"kind": "ancestral"}
            assert "histogram" in lesion and isinstance(lesion["seed"], int)
        assert (out / entry["preview"]).is_file()
    dataset = out / "nnUNet_raw" / "Dataset502_Aug"
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and len(list((dataset / "imagesTr").glob("*_0000.nii.gz"))) == 2
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert main(_args(setup, out)) == 0  # resume: nothing is generated or written again
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == stamps


def test_augment_checks_run_before_generation(setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(setup, out)[:-4] + ["--preset", "7"]) == 2
    assert "preset 7 does not exist" in capsys.readouterr().err
    assert not (out / "work" / "generated").exists()
