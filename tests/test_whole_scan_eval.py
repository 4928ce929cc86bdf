"""The whole-scan segmentation benchmark: lesion-level counts, patch sampling, the training sets of
each setting, and a tiny end-to-end run on coarse phantom chests that resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.errors import LeFusionError
from lefusion.evaluation.segmentation.lesions import count_lesions
from lefusion.evaluation.segmentation.patches import PatchSampler, ScanSample, crop_padded
from lefusion.evaluation.segmentation.train import TrainSettings
from lefusion.evaluation.segmentation.whole_scan import WholeScanConfig, real_split, run_whole_scan_benchmark, training_set
from lefusion.io import read_volume, write_volume
from lefusion.phantoms.chest import write_chest_phantom

pytest.importorskip("monai")


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def test_count_lesions() -> None:
    shape = (20, 40, 40)
    reference = _ball(shape, (5, 10, 10), 3) | _ball(shape, (14, 30, 30), 3)
    organ = np.zeros(shape, bool)
    organ[:, :, :25] = True  # the "lungs": the left part
    prediction = _ball(shape, (5, 11, 10), 2)  # hits lesion 1, misses lesion 2
    prediction |= _ball(shape, (10, 20, 5), 2)  # a false positive inside the organ
    prediction |= _ball(shape, (10, 20, 35), 2)  # one outside
    counts = count_lesions(prediction, reference, organ)
    assert (counts.reference_lesions, counts.detected, counts.false_positives, counts.false_positives_outside_organ) == (2, 1, 2, 1)
    assert count_lesions(np.zeros(shape, bool), reference).detected == 0
    assert count_lesions(reference, reference, organ).false_positives == 0


def test_crop_padded_and_patch_sampler() -> None:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    crop = crop_padded(array, (-1, 3, 4), (3, 4, 4))
    assert (
        crop.shape == (3, 4, 4) and (crop[0] == 0).all() and (crop[1:, :2, :2] == array[:2, 3:5, 4:6]).all() and (crop[1:, 2:] == 0).all()
    )
    lesion = np.zeros((30, 60, 60), np.uint8)
    lesion[20:23, 40:43, 10:13] = 1
    scan = ScanSample.of("s", np.random.default_rng(0).normal(size=lesion.shape).astype(np.float32), lesion, (1.0, 1.0, 1.0))
    always = PatchSampler([scan], (8, 16, 16), batch_size=4, foreground_fraction=1.0)
    images, labels = always(torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 8, 16, 16) and labels.shape == (4, 1, 8, 16, 16)
    assert all(labels[i].sum() > 0 for i in range(4))  # every patch holds the lesion
    again = always(torch.Generator().manual_seed(0))
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1])  # same generator, same batch
    never = PatchSampler([scan], (8, 16, 16), batch_size=64, foreground_fraction=0.0)
    assert never(torch.Generator().manual_seed(1))[1].sum() < 27 * 8  # random patches rarely hit a 27-voxel lesion


@pytest.fixture(scope="module")
def chests(tmp_path_factory) -> tuple[Path, Path]:
    """Coarse phantom chests: 3 pathological (1 held out) + 1 normal; and an 'augmented' folder in
    which the normal scan has a lesion drawn in (the evaluation does not care how it got there)."""
    root = tmp_path_factory.mktemp("wholescan")
    real = root / "real"
    write_chest_phantom(real, n_normal=1, n_pathological=3, n_test=1, seed=3, spacing=(6.0, 4.0, 4.0))
    augmented = root / "augmented"
    (augmented / "images").mkdir(parents=True)
    (augmented / "labels").mkdir()
    name = "CHEST-N001.nii.gz"
    image = read_volume(real / "images" / name)
    organs = read_volume(real / "organs" / name).array
    lung = np.argwhere(np.isin(organs, (10, 11, 12, 13, 14)))
    centre = lung[len(lung) // 2]
    lesion = _ball(image.shape, centre, 2) & np.isin(organs, (10, 11, 12, 13, 14))
    array = image.array.copy()
    array[lesion] = 20
    write_volume(array, augmented / "images" / name, image.geometry)
    write_volume(lesion.astype(np.uint8), augmented / "labels" / name, image.geometry)
    return real, augmented


def test_training_sets(chests, tmp_path: Path) -> None:
    real, augmented = chests
    train, test = real_split(real)
    assert len(test) == 1 and len(train) == 3 and test[0].name not in {s.name for s in train}
    plain = training_set("real", train, test, augmented)
    mixed = training_set("real+augmented", train, test, augmented)
    assert [s.name for s in plain] == [s.name for s in mixed]  # same scans: the normal one replaced
    assert [s.origin for s in mixed].count("augmented") == 1 and all(s.origin == "real" for s in plain)
    with pytest.raises(LeFusionError, match="needs --augmented"):
        training_set("real+augmented", train, test, None)
    synthetic = training_set("synthetic", train, test, augmented)
    assert [(s.name, s.origin) for s in synthetic] == [("CHEST-N001", "augmented")]  # no real scan at all
    with pytest.raises(LeFusionError, match="needs --augmented"):
        training_set("synthetic", train, test, None)
    leak = tmp_path / "leak"
    shutil.copytree(augmented, leak)
    for folder in ("images", "labels"):
        shutil.copy(real / folder.replace("labels", "masks") / f"{test[0].name}.nii.gz", leak / folder / f"{test[0].name}.nii.gz")
    with pytest.raises(LeFusionError, match=f"{test[0].name} are test scans"):
        training_set("real+augmented", train, test, leak)


def test_whole_scan_benchmark_runs_and_resumes(chests, tmp_path: Path, capsys) -> None:
    real, augmented = chests
    config = WholeScanConfig(seeds=(0,), train=TrainSettings(iterations=2, batch_size=2), patch_shape=(8, 16, 16), width=4, device="cpu")
    out = tmp_path / "seg"
    summary = run_whole_scan_benchmark(real, augmented, out, config)
    text = summary.read_text()
    assert "| real | 3 (" in text and "| real+augmented | 3 (" in text and "FP / scan outside lungs" in text
    rows = json.loads((out / "summary.json").read_text())
    assert [r["setting"] for r in rows] == ["real", "real+augmented"]
    assert rows[1]["training_lesions"] == rows[0]["training_lesions"] + 1  # the drawn lesion
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 2
    before = [p.stat().st_mtime_ns for p in runs]
    capsys.readouterr()
    run_whole_scan_benchmark(real, augmented, out, config)
    assert "saved in an earlier run, skipped" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in runs] == before


def test_mri_normaliser_over_nonzero_voxels() -> None:
    """Skull-stripped MRI: the z-score is taken over the brain (non-zero voxels), the surround stays
    0; without `nonzero` the empty surround drags the statistics."""
    from lefusion.evaluation.segmentation.data import Normaliser

    image = np.zeros((10, 10, 10))
    brain = _ball(image.shape, (5, 5, 5), 3)
    image[brain] = np.random.default_rng(0).normal(500.0, 50.0, int(brain.sum()))
    out = Normaliser.fit("mri", [], nonzero=True)(image)
    assert abs(out[brain].mean()) < 1e-5 and abs(out[brain].std() - 1) < 1e-5 and (out[~brain] == 0).all()
    whole = Normaliser.fit("mri", [])(image)
    assert abs(whole.mean()) < 1e-5 and whole[~brain].max() < 0  # the surround is not 0 there
    with pytest.raises(LeFusionError, match="zero everywhere"):
        Normaliser("mri", nonzero=True)(np.zeros((4, 4, 4)))


def _load_recipe():
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "whole_scan_benchmark.py"
    spec = importlib.util.spec_from_file_location("whole_scan_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("profile", ["cpu", "gpu", "smoke"])
def test_recipe_commands_parse(profile: str) -> None:
    """Every command of every profile is one the CLI accepts, and the recipe's data flow holds:
    augment reads the lesion-free copy, evaluation compares against its output."""
    from lefusion.cli import build_parser

    recipe = _load_recipe()
    steps = recipe.plan(recipe.PROFILES[profile])
    parser = build_parser()
    for step in steps:
        parser.parse_args(list(step.argv))
    augment, evaluate = (dict(zip(s.argv, s.argv[1:])) for s in steps[2:])
    assert augment["--scans"] == "normal" and evaluate["--augmented"] == augment["--out"] and evaluate["--real"] == "real"
    assert "--n-pathological 0" in steps[1].command and "--n-test" not in steps[1].command
