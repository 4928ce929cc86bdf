"""Reconstruction scores of a generated scan against its real scan: lesion MAE / MSE on the real
scan's brain scale, MS-SSIM over the brain box, and the folder evaluation through the manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lefusion.errors import LeFusionError
from lefusion.evaluation.reconstruction import evaluate_reconstruction, ms_ssim, organ_range, score_reconstruction
from lefusion.io import Geometry, Volume, write_volume

pytest.importorskip("monai")


def _brain(shape=(24, 28, 24), seed=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, lesion, brain): a smooth ellipsoid 'brain' of intensity ~ 100..300, 0 outside, and a cube lesion."""
    grid = np.indices(shape).astype(np.float64)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (c * 0.9)) ** 2 for g, c in zip(grid, centre)))
    brain = r <= 1
    image = np.where(brain, 200.0 + 100.0 * np.cos(3 * r) + np.random.default_rng(seed).normal(0, 5, shape), 0.0)
    lesion = np.zeros(shape, bool)
    lesion[4:8, 12:16, 10:14] = True  # half way out, where the intensity is mid-range
    return image, lesion, brain


def test_scores_on_the_real_scale() -> None:
    real, lesion, brain = _brain()
    lo, hi = organ_range(real, brain)
    generated = real.copy()
    generated[lesion] += 0.1 * (hi - lo)  # a tenth of the brain's range, where no clipping happens
    inside = (real[lesion] - lo) / (hi - lo)
    assert inside.min() > 0 and inside.max() < 0.9  # the shift stays inside [0, 1]
    scores = score_reconstruction("c", generated, real, lesion, brain)
    assert scores.lesion_voxels == 64
    assert scores.mae_lesion == pytest.approx(0.1, abs=1e-9) and scores.mse_lesion == pytest.approx(0.01, abs=1e-9)
    assert 0.5 < scores.ms_ssim < 1.0 and scores.scales >= 2
    same = score_reconstruction("c", real, real, lesion, brain)
    assert same.mae_lesion == 0 and same.ms_ssim == pytest.approx(1.0, abs=1e-6)
    noisy = real + np.random.default_rng(1).normal(0, 0.2 * (hi - lo), real.shape)
    assert score_reconstruction("c", noisy, real, lesion, brain).ms_ssim < scores.ms_ssim  # worse everywhere: lower
    with pytest.raises(LeFusionError, match="NaN"):
        score_reconstruction("c", np.full_like(real, np.nan), real, lesion, brain)
    with pytest.raises(LeFusionError, match="differ in shape"):
        score_reconstruction("c", real[1:], real, lesion, brain)


def test_ms_ssim_scales_fit_the_volume() -> None:
    x = np.random.default_rng(0).random((96, 100, 96))
    assert ms_ssim(x, x) == (pytest.approx(1.0, abs=1e-6), 5)
    small = np.random.default_rng(0).random((12, 40, 40))
    assert ms_ssim(small, small)[1] == 2  # 12 voxels: two levels of a 5-voxel window
    with pytest.raises(ValueError, match="too small"):
        ms_ssim(small[:4], small[:4])


def test_evaluate_a_generate_folder(tmp_path: Path) -> None:
    real, lesion, brain = _brain()
    geometry = Geometry(spacing=(2.0, 2.0, 2.0))
    write_volume(Volume(real.astype(np.float32), geometry), tmp_path / "real" / "images" / "B1.nii.gz")
    write_volume(Volume(brain.astype(np.uint8) * 3, geometry), tmp_path / "real" / "organs" / "B1.nii.gz")
    generated = real.copy()
    generated[lesion] = real[brain].max()
    gen = tmp_path / "gen"
    write_volume(Volume(generated.astype(np.float32), geometry), gen / "images" / "B1_mix.nii.gz")
    write_volume(Volume(lesion.astype(np.uint8), geometry), gen / "labels" / "B1_mix.nii.gz")
    entry = {"image": "images/B1_mix.nii.gz", "label": "labels/B1_mix.nii.gz", "method": "lefusion"}
    manifest = {"outputs": {"B1_mix": {**entry, "source_image": str(tmp_path / "real" / "images" / "B1.nii.gz")}}}
    (gen / "manifest.json").write_text(json.dumps(manifest))
    summary = evaluate_reconstruction(gen, tmp_path / "real" / "organs", tmp_path / "out")
    assert summary["method"] == "lefusion" and summary["cases"] == 1 and summary["mae_lesion"] > 0.05
    assert json.loads((tmp_path / "out" / "reconstruction.json").read_text())["per_case"][0]["case"] == "B1_mix"
    assert math.isclose(summary["mae_lesion"], evaluate_reconstruction(gen, None, tmp_path / "out2")["mae_lesion"], rel_tol=1e-3)
    (tmp_path / "real" / "organs" / "B1.nii.gz").unlink()
    with pytest.raises(LeFusionError, match="no organ label map"):
        evaluate_reconstruction(gen, tmp_path / "real" / "organs", tmp_path / "out3")
