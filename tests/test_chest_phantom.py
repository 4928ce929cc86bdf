"""Whole-chest CT phantom: layout, label ids, HU semantics, geometry (spacing, directions, world
coordinates), nodules, determinism, CLI and preview. Coarse chests (6 x 4 x 4 mm) keep it fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lefusion.cli import main
from lefusion.data.layouts import find_cases
from lefusion.errors import LeFusionError
from lefusion.io import read_volume
from lefusion.phantoms import render_chest_preview, render_phantom_preview, write_chest_phantom, write_phantom
from lefusion.phantoms.chest import DIRECTIONS, make_chest_case, world_mm
from lefusion.phantoms.chest_labels import LUNG, LUNG_LEFT, LUNG_RIGHT, ORGAN_LABELS
from lefusion.phantoms.lung import FAMILIES

COARSE = (6.0, 4.0, 4.0)
N_NORMAL, N_PATH = 2, 3


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("chest")
    return root, write_chest_phantom(root, n_normal=N_NORMAL, n_pathological=N_PATH, seed=0, spacing=COARSE)


def _case(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(read_volume(root / sub / f"{name}.nii.gz").array for sub in ("images", "masks", "organs"))  # type: ignore[return-value]


def _meta(root: Path) -> dict:
    return json.loads((root / "phantom.json").read_text())


def test_layout_names_dtypes(chest) -> None:
    root, summary = chest
    assert summary["normal"] == ["CHEST-N001", "CHEST-N002"]
    assert summary["pathological"] == [f"CHEST-P{i:03d}" for i in range(1, N_PATH + 1)]
    names = summary["normal"] + summary["pathological"]
    for sub in ("images", "masks", "organs"):
        assert sorted(p.name for p in (root / sub).iterdir()) == sorted(f"{n}.nii.gz" for n in names)
    test = (root / "test.txt").read_text().split()
    assert test == summary["test"] and len(test) == 2 and set(test) <= set(summary["pathological"])  # half, rounded up
    cases = {c.name: c for c in find_cases(root)}  # the plain layout reads it
    assert set(cases) == set(names) and {cases[t].split for t in test} == {"test"}
    for name in names:
        image, mask, organs = _case(root, name)
        assert image.dtype == np.int16 and mask.dtype == np.uint8 and organs.dtype == np.uint8
        assert image.shape == mask.shape == organs.shape == (47, 88, 88)  # round(280/6, 350/4, 350/4)
        assert set(np.unique(organs).tolist()) <= {0, *ORGAN_LABELS.values()}
        lesion = mask > 0
        if name.startswith("CHEST-N"):
            assert not lesion.any(), f"{name}: a lesion-free scan must have an all-zero mask"
        else:
            assert set(np.unique(mask).tolist()) == {0, 1}
            assert np.isin(organs[lesion], LUNG).all(), f"{name}: nodule voxels outside the lungs"


def test_organ_labels_cover_the_chest(chest) -> None:
    """Every lobe, the trachea, heart, aorta, liver, some vertebrae and ribs of both sides are there."""
    root, summary = chest
    _, _, organs = _case(root, summary["normal"][0])
    present = set(np.unique(organs).tolist())
    for name in (
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
    ):
        assert ORGAN_LABELS[name] in present, name
    for name in ("trachea", "heart", "aorta", "liver", "esophagus", "sternum", "spinal_cord", "vertebrae_T6", "rib_left_5", "rib_right_5"):
        assert ORGAN_LABELS[name] in present, name
    right, left = np.isin(organs, LUNG_RIGHT), np.isin(organs, LUNG_LEFT)
    ml = float(np.prod(COARSE)) / 1000
    assert 900 < right.sum() * ml < 3500 and 800 < left.sum() * ml < 3200
    assert right.sum() > left.sum(), "the heart takes room from the left lung"


def test_hu_like_ct(chest) -> None:
    root, summary = chest
    image, _, organs = _case(root, summary["normal"][0])
    lungs = np.isin(organs, LUNG)
    lung_hu = image[ndimage.binary_erosion(lungs, iterations=2)]
    assert -900 < np.median(lung_hu) < -780
    assert -1030 < np.median(image[:, :3, :3]) < -960  # air (or padding) in the corners
    assert np.median(image[organs == ORGAN_LABELS["heart"]]) == pytest.approx(45, abs=20)
    assert np.median(image[organs == ORGAN_LABELS["liver"]]) == pytest.approx(58, abs=20)
    assert image[np.isin(organs, [ORGAN_LABELS[f"vertebrae_T{k}"] for k in range(1, 13)])].max() > 500  # cortex
    assert image[organs == ORGAN_LABELS["trachea"]].min() < -900  # an air lumen
    body = image > -300
    fat = image[body & (image < -40)]
    assert fat.size > 0.05 * body.sum() and -130 < np.median(fat) < -60


def test_geometry_and_directions(chest) -> None:
    root, summary = chest
    meta = {c["name"]: c for c in _meta(root)["cases"]}
    kinds = {n: meta[n]["direction_kind"] for n in meta}
    assert kinds["CHEST-N001"] == "identity" and kinds["CHEST-N002"] == "oblique" and kinds["CHEST-P001"] == "oblique"
    for name, case in meta.items():
        g = read_volume(root / "images" / f"{name}.nii.gz").geometry
        assert np.allclose(g.spacing, COARSE) and np.linalg.norm(g.origin) > 50
        d = np.asarray(g.direction).reshape(3, 3)
        assert np.allclose(d @ d.T, np.eye(3), atol=1e-5)
        assert np.allclose(g.direction, case["direction"], atol=1e-5)
        if case["direction_kind"] == "oblique":
            assert 3.5 < np.degrees(np.arccos(np.clip(d[2, 2], -1, 1))) < 13.5
    assert set(DIRECTIONS) == {"identity", "oblique", "flip_z", "ras"}


def test_flips_keep_the_patient_in_place() -> None:
    """A flipped grid stores the same patient: the same voxels re-ordered, each keeping its world
    position; the left lung lies at larger world x (LPS) whatever the storage order, and each
    nodule's world centre is its voxel centre through the geometry."""
    base = make_chest_case(np.random.default_rng([5, 21, 0]), 1, "identity", COARSE)
    shape = base[0].shape
    k, j, i = 10, 20, 30
    flips = {"flip_z": ((slice(None, None, -1), slice(None), slice(None)), (shape[0] - 1 - k, j, i))}
    flips["ras"] = ((slice(None), slice(None, None, -1), slice(None, None, -1)), (k, shape[1] - 1 - j, shape[2] - 1 - i))
    flips["oblique"] = ((slice(None),) * 3, None)
    for kind, (sl, stored) in flips.items():
        other = make_chest_case(np.random.default_rng([5, 21, 0]), 1, kind, COARSE)
        for a, b in zip(base[:3], other[:3]):
            assert np.array_equal(a[sl], b), kind
        if stored is not None:
            assert np.allclose(world_mm(base[3], (k, j, i)), world_mm(other[3], stored), atol=0.01), kind
        organs, geometry = other[2], other[3]
        lung_x = {
            s: np.mean([world_mm(geometry, v)[0] for v in np.argwhere(np.isin(organs, ids))[::97]])
            for s, ids in (("L", LUNG_LEFT), ("R", LUNG_RIGHT))
        }
        assert lung_x["L"] > lung_x["R"] + 100, kind
        nod = other[4]["nodules"][0]
        assert np.allclose(world_mm(geometry, nod["centre_vox"]), nod["centre_world_mm"], atol=0.1), kind  # centre_vox has 2 decimals


def test_nodules(chest) -> None:
    """1-3 nodules per pathological scan, families from the lung phantom, 4-20 mm, inside the
    lungs, clear of the pleura unless juxtapleural; the metadata matches the mask."""
    root, summary = chest
    families = set()
    for case in _meta(root)["cases"]:
        image, mask, organs = _case(root, case["name"])
        if case["split"] == "normal":
            assert case["nodules"] == []
            continue
        assert 1 <= len(case["nodules"]) <= 3
        parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert n == len(case["nodules"])
        for nod in case["nodules"]:
            families.add(nod["family"])
            assert nod["family"] in FAMILIES and 4.0 <= nod["diameter_mm"] <= 20.0 and nod["lobe"].startswith("lung_")
            c = np.round(nod["centre_vox"]).astype(int)
            assert mask[tuple(c)] or ndimage.binary_dilation(mask, iterations=1)[tuple(c)]
            assert ORGAN_LABELS[nod["lobe"]] in np.unique(organs[mask > 0])
    assert families, "no nodules were checked"


def test_same_seed_same_bytes(chest, tmp_path: Path) -> None:
    """A case depends only on (seed, split, index): the same seed rewrites it byte for byte, even
    in a folder with fewer cases; another seed changes it."""
    root, _ = chest
    write_chest_phantom(tmp_path / "a", n_normal=0, n_pathological=1, seed=0, spacing=COARSE)
    write_chest_phantom(tmp_path / "b", n_normal=0, n_pathological=1, seed=1, spacing=COARSE)
    same, other, first = _case(tmp_path / "a", "CHEST-P001"), _case(tmp_path / "b", "CHEST-P001"), _case(root, "CHEST-P001")
    assert all(np.array_equal(x, y) for x, y in zip(same, first))
    assert not np.array_equal(other[0], first[0])


def test_cli_and_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["phantom", "chest", "--out", str(out), "--n-normal", "0", "--n-pathological", "1", "--n-test", "1"]
    assert main([*args, "--spacing", "6", "4", "4", "--fov", "200", "320", "320"]) == 0
    image = read_volume(out / "images" / "CHEST-P001.nii.gz")
    assert image.shape == (33, 80, 80) and (out / "test.txt").read_text() == "CHEST-P001\n"
    with pytest.raises(LeFusionError, match="roi-shape belongs to the lung and cardiac phantoms"):
        write_phantom("chest", tmp_path / "x", roi_shape=(8, 8, 8))
    with pytest.raises(LeFusionError, match="fov belongs to the chest phantom"):
        write_phantom("lung", tmp_path / "x", fov_mm=(100, 100, 100))
    with pytest.raises(LeFusionError, match="n_test=3 must be between 0 and the 2"):
        write_chest_phantom(tmp_path / "x", n_pathological=2, n_test=3, spacing=COARSE)
    with pytest.raises(LeFusionError, match="spacing must be three voxel sizes"):
        write_chest_phantom(tmp_path / "x", spacing=(0.0, 1.0, 1.0))
    with pytest.raises(LeFusionError, match="field of view"):
        write_chest_phantom(tmp_path / "x", fov_mm=(10.0, 350.0, 350.0))
    assert main(["phantom", "chest", "--out", str(tmp_path / "y"), "--roi-shape", "8", "8", "8"]) == 2


def test_preview(chest, tmp_path: Path) -> None:
    from PIL import Image

    root, summary = chest
    assert render_phantom_preview(root, tmp_path / "sheet.png").is_file()  # the generic entry point too
    pngs = render_chest_preview(root, tmp_path / "png")
    assert [p.name for p in pngs] == ["CHEST-N001.png", "CHEST-P001.png"]
    with Image.open(pngs[1]) as im:
        arr = np.asarray(im)
        assert im.width > 600 and im.height > 300 and arr.std() > 20
        assert ((arr[..., 0] > 200) & (arr[..., 1] < 100)).any(), "the nodule outline (red) is drawn"


@pytest.mark.slow
def test_default_grid(tmp_path: Path) -> None:
    """The default chest: 112 x 438 x 438 voxels of 2.5 x 0.8 x 0.8 mm (about 20 s on one core)."""
    image, mask, organs, geometry, meta = make_chest_case(np.random.default_rng([0, 21, 0]), 2, "identity")
    assert image.shape == (112, 438, 438) and geometry.spacing == (2.5, 0.8, 0.8)
    assert mask.sum() > 0 and meta["tree_segments"]["artery"] > 2000
