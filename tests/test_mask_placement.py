"""DiffMask masks placed on a user's scan grid (lefusion.masks.placement) and `lefusion masks sample`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from lefusion.checkpoints.format import save_checkpoint
from lefusion.cli import main
from lefusion.config import DenoiserConfig
from lefusion.data.layouts import find_cases
from lefusion.errors import LeFusionError
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.masks.diffmask import control_sphere, diffmask_model_config, load_diffmask
from lefusion.masks.placement import box_geometry, resample, sample_masks_in_volume
from lefusion.models import Denoiser

BOX = (8, 16, 16)
FLIP_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = diffmask_model_config(DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8), 6, BOX, prediction="x0")
    path = tmp_path_factory.mktemp("dm") / "ckpt"
    return save_checkpoint(path, config, Denoiser(config.denoiser).state_dict(), {"diffmask": {"box": list(BOX)}})


def test_box_on_a_1mm_scan_is_an_exact_shift():
    scan = Volume(np.zeros((20, 30, 30), np.uint8), Geometry(origin=(5.0, -3.0, 2.0), direction=FLIP_X))
    box_mask = control_sphere(BOX, (4, 8, 8), 5.0)
    geometry = box_geometry(scan, (10, 12, 14), BOX)
    placed = resample(box_mask.astype(np.uint8), geometry, scan.geometry, scan.shape, linear=False)
    expected = np.zeros(scan.shape, np.uint8)
    expected[6:14, 4:20, 6:22] = box_mask  # box voxel (4, 8, 8) lands on (10, 12, 14)
    assert np.array_equal(placed, expected)


def test_anisotropic_scan_keeps_volume_and_centre():
    scan = Volume(np.zeros((16, 40, 40), np.uint8), Geometry(spacing=(2.0, 0.7, 0.7), origin=(-10.0, 4.0, 30.0), direction=FLIP_X))
    box = (16, 16, 16)
    box_mask = control_sphere(box, (8, 8, 8), 9.0)
    centre = (7.0, 20.0, 18.0)
    placed = resample(box_mask.astype(np.float32), box_geometry(scan, centre, box), scan.geometry, scan.shape, linear=True) >= 0.5
    volume = placed.sum() * 2.0 * 0.7 * 0.7
    assert abs(volume / box_mask.sum() - 1.0) < 0.1
    assert np.allclose(ndimage.center_of_mass(placed), centre, atol=0.6)


def test_sample_in_volume_respects_boundary_and_rejects_a_centre_outside(checkpoint):
    model = load_diffmask(checkpoint)
    scan = Volume(np.zeros((10, 24, 24), np.int16), Geometry(spacing=(1.5, 0.8, 0.8)))
    boundary = np.zeros(scan.shape, bool)
    boundary[2:8, 6:18, 6:14] = True
    masks = sample_masks_in_volume(model, scan, 3, 6.0, (5, 12, 10), boundary, seed=1)
    assert len(masks) == 3 and all(m.shape == scan.shape and not (m & ~boundary).any() for m in masks)
    again = sample_masks_in_volume(model, scan, 3, 6.0, (5, 12, 10), boundary, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again))
    with pytest.raises(LeFusionError, match="outside the boundary"):
        sample_masks_in_volume(model, scan, 1, 6.0, (5, 2, 2), boundary)
    with pytest.raises(LeFusionError, match="outside the scan"):
        sample_masks_in_volume(model, scan, 1, 6.0, (5, 30, 2), boundary)


def test_cli_sample_writes_a_dataset_generate_can_read(checkpoint, tmp_path, capsys):
    scan_geometry = Geometry(spacing=(1.25, 0.7, 0.7), origin=(1.0, 2.0, 3.0))
    scan = write_volume(Volume(np.full((10, 24, 24), -800, np.int16), scan_geometry), tmp_path / "normal_001.nii.gz")
    lung = np.zeros((10, 24, 24), np.uint8)
    lung[1:9, 3:21, 3:21] = 1
    boundary = write_volume(Volume(lung, scan_geometry), tmp_path / "lung_001.nii.gz")
    out = tmp_path / "out"
    argv = [
        "masks",
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--n",
        "2",
        "--diameter",
        "5",
        "--center",
        "5,12,12",
        "--like",
        str(scan),
        "--boundary",
        str(boundary),
        "--seed",
        "4",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    cases = find_cases(out)
    assert [c.name for c in cases] == ["normal_001_0000", "normal_001_0001"]
    for case in cases:
        image, mask = read_volume(case.image), read_volume(case.mask)
        assert mask.geometry.matches(scan_geometry) and image.geometry.matches(scan_geometry)
        assert np.array_equal(image.array, np.full((10, 24, 24), -800)) and not (mask.array.astype(bool) & ~lung.astype(bool)).any()
    meta = json.loads((out / "masks.json").read_text())
    assert [s["seed"] for s in meta["samples"]] == [4, 5] and meta["center_zyx"] == [5.0, 12.0, 12.0]


def test_cli_sample_in_the_model_box_and_bad_input(checkpoint, tmp_path, capsys):
    assert (
        main(["masks", "sample", "--checkpoint", str(checkpoint), "--n", "2", "--diameter", "4", "6", "--out", str(tmp_path / "box")]) == 0
    )
    files = sorted((tmp_path / "box" / "masks").glob("*.nii.gz"))
    assert [f.name for f in files] == ["diffmask_0000.nii.gz", "diffmask_0001.nii.gz"]
    assert read_volume(files[0]).shape == BOX
    # the default threshold ("size") gives each mask the requested volume: round(pi/6 d^3) voxels
    assert [int(read_volume(f).array.sum()) for f in files] == [round(np.pi / 6 * d**3) for d in (4, 6)]
    assert json.loads((tmp_path / "box" / "masks.json").read_text())["threshold"] == "size"
    assert (
        main(
            [
                "masks",
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--n",
                "1",
                "--diameter",
                "4",
                "--threshold",
                "0.5",
                "--out",
                str(tmp_path / "fixed"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "fixed" / "masks.json").read_text())["threshold"] == 0.5
    with pytest.raises(SystemExit):
        main(
            [
                "masks",
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--n",
                "1",
                "--diameter",
                "4",
                "--threshold",
                "big",
                "--out",
                str(tmp_path / "z"),
            ]
        )
    assert "'size' or a number" in capsys.readouterr().err
    empty = write_volume(Volume(np.zeros((6, 8, 8), np.uint8)), tmp_path / "empty.nii.gz")
    capsys.readouterr()
    assert (
        main(
            [
                "masks",
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--n",
                "1",
                "--diameter",
                "4",
                "--boundary",
                str(empty),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "empty.nii.gz" in capsys.readouterr().err
    other = write_volume(Volume(np.ones((6, 8, 8), np.uint8), Geometry(spacing=(2.0, 1.0, 1.0))), tmp_path / "other.nii.gz")
    assert (
        main(
            [
                "masks",
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--n",
                "1",
                "--diameter",
                "4",
                "--like",
                str(empty),
                "--boundary",
                str(other),
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "does not match" in capsys.readouterr().err
