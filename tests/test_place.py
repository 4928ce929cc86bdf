"""`lefusion place`: lesions inside the eroded organ, apart from each other and from existing
lesions, at the requested size, on oblique anisotropic grids; scans without room reported by name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from lefusion.cli import main
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.masks.diffmask import load_diffmask
from lefusion.masks.place_dataset import PlaceConfig, place_dataset
from lefusion.masks.shapes import DiffMaskShapes

pytestmark = pytest.mark.usefixtures("one_thread")
C, S = np.cos(np.radians(15)), np.sin(np.radians(15))
OBLIQUE = Geometry(spacing=(2.0, 0.9, 0.9), origin=(10.0, -40.0, 300.0), direction=(C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0))
SHAPE = (40, 110, 120)


def _organ(shape=SHAPE) -> np.ndarray:
    """Two ellipsoid 'lungs', labels 10 and 11 (TotalSegmentator-like ids)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    labels = np.zeros(shape, np.uint8)
    for label, cx in ((10, 35), (11, 85)):
        inside = (((grid - (20, 55, cx)) / (17, 45, 25)) ** 2).sum(-1) <= 1
        labels[inside] = label
    return labels


@pytest.fixture
def scans(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "scans"
    organs = _organ()
    for name in ("a", "b"):
        image = np.where(organs > 0, -850, 40).astype(np.int16) + rng.integers(-20, 20, SHAPE).astype(np.int16)
        write_volume(Volume(image, OBLIQUE), root / f"{name}.nii.gz")
        write_volume(Volume(organs, OBLIQUE), tmp_path / "organs" / f"{name}.nii.gz")
    return root


def _check_dataset(out: Path, organs: np.ndarray, request: tuple[float, float], n: tuple[int, int], gap_mm: float) -> dict:
    meta = json.loads((out / "lesions.json").read_text())
    assert not meta["failed"]
    eroded = ndimage.binary_erosion(organs > 0, np.ones((3, 3, 3)))
    for name, entry in meta["scans"].items():
        mask = read_volume(out / entry["mask"])
        assert mask.geometry.matches(OBLIQUE)
        assert read_volume(out / entry["image"]).geometry.matches(OBLIQUE)
        lesions = entry["lesions"]
        assert n[0] <= len(lesions) <= n[1]
        assert not (mask.array.astype(bool) & ~eroded).any(), f"{name}: a lesion voxel touches the organ's edge"
        components, count = ndimage.label(mask.array > 0, np.ones((3, 3, 3)))
        assert count == len(lesions), f"{name}: lesions overlap or touch"
        for lesion in lesions:
            assert request[0] * 0.8 <= lesion["equivalent_diameter_mm"] <= request[1] * 1.2
            assert abs(lesion["equivalent_diameter_mm"] / lesion["requested_diameter_mm"] - 1) <= 0.2
        if count > 1:  # gap between lesions, in mm
            distance = ndimage.distance_transform_edt(components != 1, sampling=OBLIQUE.spacing)
            assert distance[components > 1].min() >= gap_mm
    return meta


def test_place_handcrafted_lesions_inside_the_eroded_organ(scans, tmp_path):
    out = tmp_path / "placed"
    args = [
        "place",
        "--scans",
        str(scans),
        "--out",
        str(out),
        "--lesions",
        "2:3",
        "--diameter",
        "6:12",
        "--shapes",
        "handcrafted",
        "--organ-masks",
        str(tmp_path / "organs"),
        "--organ-labels",
        "10",
        "11",
        "--gap",
        "4",
        "--seed",
        "1",
    ]
    assert main(args) == 0
    meta = _check_dataset(out, _organ(), (6, 12), (2, 3), 4.0)
    for name in ("a", "b"):
        assert np.array_equal(read_volume(out / "images" / f"{name}.nii.gz").array, read_volume(scans / f"{name}.nii.gz").array)
    first = {k: v["lesions"] for k, v in meta["scans"].items()}
    stamp = (out / "masks" / "a.nii.gz").stat().st_mtime_ns
    assert main(args) == 0  # re-run: done scans are skipped, same placement
    assert (out / "masks" / "a.nii.gz").stat().st_mtime_ns == stamp
    assert {k: v["lesions"] for k, v in json.loads((out / "lesions.json").read_text())["scans"].items()} == first


class _ControlRegion(torch.nn.Module):
    """A stand-in DiffMask network that returns its control region as the clean mask (x0)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: None) -> torch.Tensor:
        return x[:, 1:2]


@pytest.mark.parametrize("bundled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_place_diffmask_shapes_keep_clear_of_existing_lesions(scans, tmp_path, bundled):
    """The scans come as a plain dataset whose label maps hold an existing lesion: it is kept clear
    of. The fast variant's DiffMask returns its control region (an ellipsoid of the requested size);
    the bundled model takes about half a minute here on 2 cores (marked slow)."""
    data = tmp_path / "dataset"
    existing = np.zeros(SHAPE, np.uint8)
    existing[18:23, 50:60, 30:40] = 1
    for name in ("a", "b"):
        write_volume(read_volume(scans / f"{name}.nii.gz"), data / "images" / f"{name}.nii.gz")
        write_volume(Volume(existing, OBLIQUE), data / "masks" / f"{name}.nii.gz")
    model = load_diffmask("diffmask_lidc")
    if not bundled:
        model = dataclasses.replace(model, denoiser=_ControlRegion(), config=dataclasses.replace(model.config, prediction="x0"))
    out = tmp_path / "placed"
    config = PlaceConfig(lesions=(2, 2), diameter_mm=(8.0, 8.0), gap_mm=3.0, seed=2)
    _, failed = place_dataset(data, out, config, DiffMaskShapes(model), {"source": "diffmask"}, tmp_path / "organs")
    assert not failed
    meta = _check_dataset(out, _organ(), (8, 8), (2, 2), 3.0)
    for entry in meta["scans"].values():
        assert entry["existing_lesions"] == 1 and all(lesion["shape"]["source"] == "diffmask" for lesion in entry["lesions"])
        new = read_volume(out / entry["mask"]).array > 0
        distance = ndimage.distance_transform_edt(existing == 0, sampling=OBLIQUE.spacing)
        assert distance[new].min() >= 3.0, "a new lesion comes closer than the gap to the existing one"


def test_a_scan_without_room_is_named_and_the_others_still_run(scans, tmp_path, capsys):
    small = np.zeros(SHAPE, np.uint8)
    small[18:22, 50:56, 30:36] = 10  # an organ far too small for a 10 mm lesion
    write_volume(Volume(small, OBLIQUE), tmp_path / "organs" / "b.nii.gz")
    out = tmp_path / "placed"
    args = [
        "place",
        "--scans",
        str(scans),
        "--out",
        str(out),
        "--diameter",
        "10",
        "--shapes",
        "handcrafted",
        "--organ-masks",
        str(tmp_path / "organs"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "b.nii.gz: no room for lesion 1" in err
    meta = json.loads((out / "lesions.json").read_text())
    assert list(meta["scans"]) == ["a"] and list(meta["failed"]) == ["b"]


def test_bad_organ_masks_are_named(scans, tmp_path, capsys):
    organs = tmp_path / "organs"
    write_volume(Volume(np.zeros(SHAPE, np.uint8), OBLIQUE), organs / "a.nii.gz")
    write_volume(Volume(_organ(), Geometry(spacing=(2.0, 0.9, 0.9))), organs / "b.nii.gz")
    args = ["place", "--scans", str(scans), "--out", str(tmp_path / "p"), "--shapes", "handcrafted", "--organ-masks", str(organs)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "a.nii.gz: empty label map" in err and "b.nii.gz: label map grid" in err and "does not match the scan" in err
    args += ["--organ-labels", "7"]
    write_volume(Volume(_organ(), OBLIQUE), organs / "a.nii.gz")
    assert main([*args[:2], str(scans), *args[3:4], str(tmp_path / "q"), *args[5:]]) == 2
    assert "organ label(s) 7 absent" in capsys.readouterr().err


def test_place_with_the_built_in_lung_mask_on_phantom_chests(tmp_path):
    """Without organ masks, CT scans get the built-in lung mask: every lesion lands in a true lung."""
    root = tmp_path / "chest"
    assert (
        main(
            [
                "phantom",
                "chest",
                "--out",
                str(root),
                "--n-normal",
                "2",
                "--n-pathological",
                "0",
                "--spacing",
                "5",
                "2",
                "2",
                "--fov",
                "200",
                "240",
                "260",
            ]
        )
        == 0
    )
    out = tmp_path / "placed"
    assert main(["place", "--scans", str(root), "--out", str(out), "--lesions", "2", "--diameter", "6:9", "--shapes", "handcrafted"]) == 0
    meta = json.loads((out / "lesions.json").read_text())
    assert len(meta["scans"]) == 2
    for name, entry in meta["scans"].items():
        assert entry["organ"].startswith("built-in lung mask")
        lungs = read_volume(root / "organs" / f"{name}.nii.gz").array
        new = read_volume(out / entry["mask"]).array > 0
        assert new.sum() > 0 and np.isin(lungs[new], (10, 11, 12, 13, 14)).mean() > 0.98, "lesions lie in the true lungs"


def test_place_fits_lesions_into_a_thin_organ(tmp_path):
    """A 12 mm slab at 2 mm voxels (white matter is often that thin): two 8 mm lesions fit with a
    voxel of margin in an orientation that fits. The strict candidates (the shape's full reach of
    organ around the centre) cannot exist here; the relaxed round finds them."""
    geometry = Geometry(spacing=(2.0, 2.0, 2.0))
    shape = (40, 40, 40)
    organ = np.zeros(shape, np.uint8)
    organ[15:21, 4:36, 4:36] = 3  # 6 voxels = 12 mm thick
    write_volume(Volume(np.where(organ > 0, 300.0, 0.0).astype(np.float32), geometry), tmp_path / "scans" / "slab.nii.gz")
    write_volume(Volume(organ, geometry), tmp_path / "organs" / "slab.nii.gz")
    args = ["place", "--scans", str(tmp_path / "scans"), "--out", str(tmp_path / "placed"), "--organ-masks", str(tmp_path / "organs")]
    args += ["--organ-labels", "3", "--lesions", "2", "--diameter", "8", "--shapes", "handcrafted", "--seed", "0"]
    assert main(args) == 0
    mask = read_volume(tmp_path / "placed" / "masks" / "slab.nii.gz").array > 0
    assert ndimage.label(mask, np.ones((3, 3, 3)))[1] == 2
    assert not (mask & ~ndimage.binary_erosion(organ > 0, np.ones((3, 3, 3)))).any()
