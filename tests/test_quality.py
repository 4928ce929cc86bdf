"""Image-quality metrics against hand-computed values on tiny arrays, and `evaluate quality` end to end."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from lefusion.cli.evaluate import add_quality_parser
from lefusion.errors import LeFusionError
from lefusion.evaluation.patches import extract_patch, lesion_centroids, lesion_patches
from lefusion.evaluation.quality import (
    background_error,
    histogram_distance,
    median_bandwidth,
    mmd,
    psnr,
    random_directions,
    sliced_wasserstein,
    ssim,
)
from lefusion.evaluation.quality_report import evaluate_quality
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.generation.baseline_methods import make_baseline
from lefusion.io import read_volume, write_volume
from lefusion.phantoms import write_lung_phantom

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------ paired


def test_psnr_of_a_constant_offset():
    real = np.zeros((4, 8, 8))
    assert psnr(real + 0.1, real, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr(real, real) == math.inf


def test_psnr_inside_a_mask_sees_only_the_mask():
    real = RNG.uniform(-1, 1, (4, 8, 8))
    mask = np.zeros(real.shape, bool)
    mask[1:3, 2:6, 2:6] = True
    generated = real.copy()
    generated[mask] += 0.2
    assert psnr(generated, real, 2.0, mask) == pytest.approx(10 * math.log10(4 / 0.04))
    assert psnr(generated, real, 2.0) == pytest.approx(10 * math.log10(4 / (0.04 * mask.mean())))
    assert psnr(generated, real, 2.0, ~mask) == math.inf


def test_ssim_is_one_on_identical_volumes():
    real = RNG.uniform(-1, 1, (8, 10, 10))
    mask = np.zeros(real.shape, bool)
    mask[3:5, 4:6, 4:6] = True
    assert ssim(real, real) == pytest.approx(1.0, abs=1e-12)
    assert ssim(real, real, mask=mask) == pytest.approx(1.0, abs=1e-12)


def test_masked_ssim_averages_the_full_map_over_the_mask_only():
    real = RNG.uniform(-1, 1, (12, 12, 12))
    generated = real.copy()
    generated[9:] = RNG.uniform(-1, 1, (3, 12, 12))  # changed slices z >= 9
    far, near = np.zeros(real.shape, bool), np.zeros(real.shape, bool)
    far[:3] = True  # a 7-voxel window around z <= 2 never reaches z = 9
    near[9:] = True
    assert ssim(generated, real, mask=far) == pytest.approx(1.0, abs=1e-12)
    _, full = structural_similarity(real, generated, data_range=2.0, win_size=7, full=True)
    assert ssim(generated, real, mask=near) == pytest.approx(full[near].mean())
    assert ssim(generated, real, mask=near) < 0.5
    assert ssim(generated[:5], real[:5]) == pytest.approx(1.0)  # window shrinks to 5 for a 5-slice volume


# ---------------------------------------------------------------------------------------- unpaired


def test_mmd_is_zero_for_identical_sets_and_grows_with_a_shift():
    x = RNG.standard_normal((20, 27))
    assert mmd(x, x.copy()) == 0.0
    near, far = mmd(x, x + 0.3), mmd(x, x + 3.0)
    assert 0 < near < far


def test_mmd_and_median_bandwidth_by_hand():
    # one point each, sigma 1: MMD^2 = k(0,0) + k(1,1) - 2 k(0,1) = 2 - 2 exp(-1/2)
    assert mmd(np.array([[0.0]]), np.array([[1.0]]), bandwidth=1.0) == pytest.approx(math.sqrt(2 - 2 * math.exp(-0.5)))
    assert median_bandwidth(np.array([[0.0], [3.0], [4.0]])) == pytest.approx(3.0)  # distances 3, 4, 1
    assert median_bandwidth(np.zeros((3, 2))) == 1.0


def test_sliced_wasserstein_of_a_known_shift():
    x = np.array([[0.0], [1.0], [2.0]])
    assert sliced_wasserstein(x, x + 0.5, n_projections=8) == pytest.approx(0.5)  # 1-D: every direction is +-1
    assert sliced_wasserstein(x, x.copy()) == 0.0
    cloud = RNG.standard_normal((30, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    expected = np.abs(random_directions(5, 64, seed=3) @ shift).mean()  # a translation moves each projection by theta . s
    assert sliced_wasserstein(cloud, cloud + shift, n_projections=64, seed=3) == pytest.approx(expected)
    assert sliced_wasserstein(cloud, cloud[:7] + shift, n_projections=16) > 0  # set sizes may differ


def test_histogram_distance_to_a_target():
    image = np.full((2, 4, 4), -0.95)  # every lesion voxel in the first of 16 bins
    label = np.zeros(image.shape, int)
    label[0, :2, :2] = 1
    one_hot = np.eye(16)
    assert histogram_distance(image, label, one_hot[0], (1,)) == 0.0
    assert histogram_distance(image, label, one_hot[1], (1,)) == pytest.approx(2 / 16)  # one bin width away
    assert math.isnan(histogram_distance(image, label, np.zeros(16), (1,)))


def test_background_error_is_zero_when_kept_and_measures_an_injected_change():
    source = RNG.integers(-1000, 400, (4, 6, 6)).astype(np.int16)
    lesion = np.zeros(source.shape, bool)
    lesion[1:3, 2:4, 2:4] = True
    generated = source.copy()
    generated[lesion] = 100
    assert background_error(generated, source, lesion) == (0.0, 0.0)
    generated[0, 0, 0] += 5
    worst, mean = background_error(generated, source, lesion)
    assert worst == 5.0 and mean == pytest.approx(5.0 / (~lesion).sum())


def test_patches_are_centred_on_each_lesion_and_padded():
    image = np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8)
    label = np.zeros(image.shape, int)
    label[0:2, 0:2, 0:2] = 1  # a lesion in the corner
    label[4, 6, 6] = 1  # a second, separate lesion
    centres = lesion_centroids(label, (1,))
    assert len(centres) == 2 and np.allclose(centres[0], 0.5)
    patch = extract_patch(image, np.array([4.0, 6.0, 6.0]), (3, 3, 3), pad_value=-1)
    assert patch[1, 1, 1] == image[4, 6, 6] and patch[2, 2, 2] == image[5, 7, 7]
    corner = extract_patch(image, np.array([0.0, 0.0, 0.0]), (4, 4, 4), pad_value=-1)
    assert (corner[:2] == -1).all() and corner[2, 2, 2] == image[0, 0, 0]
    assert lesion_patches(image, label, (1,), (4, 4, 4)).shape == (2, 4, 4, 4)


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality") / "lung"
    write_lung_phantom(root, n_pathological=4, n_normal=2, n_test=1, seed=0, roi_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0))
    return root


def _generate(data: Path, donors: Path, out: Path) -> Path:
    baseline = make_baseline("copy-paste", data, donors=donors)
    generate_dataset(baseline, data, out, GenerateConfig(previews=False), progress=False)
    return out


def test_evaluate_quality_pairs_real_cases_and_writes_reports(lung, tmp_path):
    on_real = _generate(lung / "Pathological", lung, tmp_path / "p_prime")  # P': generated on real masks
    on_normal = _generate(lung, lung, tmp_path / "n_prime")  # N': generated on normal cases
    summary = evaluate_quality(on_real, lung, tmp_path / "q_p")
    assert summary["outputs"] == 4 and summary["paired"] == 4
    rows = list(csv.DictReader((tmp_path / "q_p" / "quality.csv").open()))
    assert len(rows) == 4
    for row in rows:
        assert row["paired_with"] and float(row["psnr_lesion"]) < float(row["psnr_roi"])
        assert 0 < float(row["ssim_lesion"]) <= 1 and float(row["background_max_abs"]) == 0.0
    assert summary["sets"]["n_generated"] == 4 and summary["sets"]["n_real"] == 4
    assert summary["sets"]["swd"] > 0 and summary["sets"]["mmd"] > 0
    markdown = (tmp_path / "q_p" / "quality.md").read_text()
    assert "PSNR, lesion (dB)" in markdown and "MMD" in markdown
    assert json.loads((tmp_path / "q_p" / "quality.json").read_text())["paired"] == 4

    unpaired = evaluate_quality(on_normal, lung, tmp_path / "q_n")
    assert unpaired["paired"] == 0 and "psnr_roi" not in unpaired["metrics"]
    assert unpaired["metrics"]["background_max_abs"] == {"n": 2, "mean": 0.0, "std": 0.0}


def test_evaluate_quality_reports_a_changed_background(lung, tmp_path):
    out = _generate(lung, lung, tmp_path / "gen")
    entry = next(iter(json.loads((out / "manifest.json").read_text())["outputs"].values()))
    volume = read_volume(out / entry["image"])
    mask = read_volume(out / entry["label"]).array
    z, y, x = np.argwhere(mask == 0)[0]
    volume.array[z, y, x] += 7
    write_volume(volume, out / entry["image"])
    summary = evaluate_quality(out, lung, tmp_path / "q")
    assert summary["metrics"]["background_max_abs"]["mean"] == pytest.approx(7 / 2)  # one of two outputs changed by 7 HU


def test_quality_cli_and_bad_input(lung, tmp_path):
    out = _generate(lung, lung, tmp_path / "gen")
    parser = argparse.ArgumentParser()
    add_quality_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["quality", "--generated", str(out), "--real", str(lung), "--out", str(tmp_path / "q"), "--patch-size", "8", "8", "8"]
    )
    assert args.handler(args) == 0
    assert json.loads((tmp_path / "q" / "quality.json").read_text())["sets"]["patch_size"] == [8, 8, 8]
    with pytest.raises(LeFusionError, match="manifest.json: not found"):
        evaluate_quality(tmp_path / "nowhere", lung, tmp_path / "q2")
    with pytest.raises(LeFusionError, match="no pathological cases"):
        evaluate_quality(out, lung / "Normal", tmp_path / "q3")
