"""The brain phantom (MNI152-based FLAIR with MS-like lesions): contrast, lesions, layouts, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lefusion.cli import main
from lefusion.data.layouts import find_cases
from lefusion.errors import LeFusionError
from lefusion.io import read_volume
from lefusion.phantoms import write_phantom
from lefusion.phantoms.brain import make_brain_case, write_brain_phantom

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="needs nilearn (pip install 'lefusion[brain]')")
COARSE = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def brain_dir(brain_phantom_2mm) -> Path:
    """2 lesion-free and 3 pathological brains at 2 mm, one held out (conftest)."""
    return brain_phantom_2mm


@pytest.fixture(scope="module")
def fine_case():
    """One pathological subject at the default 1 mm grid."""
    return make_brain_case(np.random.default_rng([5, 31, 0]), 40)


def _read(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(read_volume(root / sub / f"{name}.nii.gz").array for sub in ("images", "masks", "organs"))  # type: ignore[return-value]


def _cases(root: Path) -> list[dict]:
    return json.loads((root / "phantom.json").read_text())["cases"]


def test_flair_contrast_csf_below_white_below_grey(brain_dir):
    for case in _cases(brain_dir):
        image, mask, organs = _read(brain_dir, case["name"])
        med = {k: float(np.median(image[(organs == k) & (mask == 0)])) for k in (1, 2, 3)}
        assert med[1] < 0.75 * med[3] and med[3] < med[2], (case["name"], med)
        assert image.dtype == np.float32 and mask.dtype == np.uint8 and organs.dtype == np.uint8
        assert np.all(image[organs == 0] == 0), "skull-stripped: 0 outside the brain"
        assert np.all(image[organs > 0] > 0), "FLAIR-like intensities are positive in the brain"


def test_lesions_hyperintense_inside_white_matter_and_counted(brain_dir):
    for case in _cases(brain_dir):
        image, mask, organs = _read(brain_dir, case["name"])
        if case["split"] == "normal":
            assert not mask.any() and case["n_lesions"] == 0 and case["lesion_volume_ml"] == 0
            continue
        assert case["n_lesions"] >= 2 and set(np.unique(mask)) == {0, 1}
        assert np.all(organs[mask > 0] == 3), "lesions lie inside the white-matter label"
        white = float(np.median(image[(organs == 3) & (mask == 0)]))
        grey = float(np.median(image[(organs == 2) & (mask == 0)]))
        assert float(np.median(image[mask > 0])) > max(1.2 * white, grey)
        _, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert n == case["n_lesions"] == len(case["lesions"]), "lesions are kept apart: one component each"
        assert sum(case["lesion_kinds"].values()) == case["n_lesions"]
        assert abs(case["lesion_volume_ml"] - mask.sum() * 8 / 1000) < 1e-3


def test_lesion_sizes_3_to_15_mm(fine_case):
    _, mask, _, geometry, meta = fine_case
    assert geometry.spacing == (1.0, 1.0, 1.0)
    parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert n == meta["n_lesions"] >= 10
    for lesion in meta["lesions"]:
        assert 3.0 <= lesion["diameter_mm"] <= 15.0
        assert all(d <= lesion["diameter_mm"] for d in lesion["short_diameters_mm"])
    for box in ndimage.find_objects(parts):
        extent = max(s.stop - s.start for s in box)  # voxels of 1 mm
        assert 1 <= extent <= 16, extent
    kinds = {lesion["kind"] for lesion in meta["lesions"]}
    assert kinds == {"periventricular", "deep", "juxtacortical"}


def test_periventricular_lesions_perpendicular_to_the_ventricle_wall(fine_case):
    """Dawson's fingers: each elongated periventricular lesion's long axis (from its mask) along the
    direction from the nearest CSF (the ventricle it touches) to its centre."""
    _, mask, organs, _, meta = fine_case
    parts, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    _, nearest = ndimage.distance_transform_edt(organs != 1, return_indices=True)
    cosines = []
    for lesion in meta["lesions"]:
        if lesion["kind"] != "periventricular" or lesion["voxels"] < 15:
            continue
        label = parts[tuple(int(round(c)) for c in lesion["centre_vox"])]
        if not label:
            continue
        points = np.argwhere(parts == label).astype(float)
        centre = points.mean(0)
        values, vectors = np.linalg.eigh(np.cov((points - centre).T))
        if values[-1] < 2.0 * values[-2]:
            continue  # not elongated enough to have a direction
        wall = nearest[(slice(None), *np.rint(centre).astype(int))]
        normal = centre - wall
        cosines.append(abs(float(vectors[:, -1] @ normal / (np.linalg.norm(normal) or 1.0))))
    assert len(cosines) >= 3, cosines
    assert np.median(cosines) > 0.8 and np.mean(np.array(cosines) > 0.6) >= 0.6, cosines


def test_same_seed_same_brain_other_seed_other_brain():
    a = make_brain_case(np.random.default_rng([1, 31, 0]), 6, COARSE)
    b = make_brain_case(np.random.default_rng([1, 31, 0]), 6, COARSE)
    c = make_brain_case(np.random.default_rng([2, 31, 0]), 6, COARSE)
    for x, y in zip(a[:3], b[:3]):
        assert np.array_equal(x, y)
    assert a[4] == b[4]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_plain_layout_read_by_the_project_loaders(brain_dir):
    cases = find_cases(brain_dir)
    names = [c.name for c in cases]
    assert names == ["BRAIN-N001", "BRAIN-N002", "BRAIN-P001", "BRAIN-P002", "BRAIN-P003"]
    test = (brain_dir / "test.txt").read_text().split()
    assert len(test) == 1 and test[0].startswith("BRAIN-P")
    assert [c.name for c in cases if c.split == "test"] == test
    meta = json.loads((brain_dir / "phantom.json").read_text())
    assert meta["settings"]["organ_labels"] == {"background": 0, "csf": 1, "grey_matter": 2, "white_matter": 3}
    assert {c["name"]: c["test"] for c in meta["cases"]}[test[0]] is True
    image = read_volume(brain_dir / "images" / "BRAIN-N001.nii.gz")
    assert image.geometry.spacing == COARSE
    assert read_volume(brain_dir / "organs" / "BRAIN-N001.nii.gz").geometry.matches(image.geometry)


def test_nnunet_layout_is_valid(tmp_path):
    out = tmp_path / "Dataset523_BrainPhantom"
    write_phantom("brain", out, n_normal=1, n_pathological=2, n_test=1, seed=0, spacing=(3.0, 3.0, 3.0), layout="nnunet")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "FLAIR"} and dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["numTraining"] == 2 == len(list((out / "imagesTr").glob("*_0000.nii.gz")))
    assert len(list((out / "labelsTr").glob("*.nii.gz"))) == 2
    cases = find_cases(out)
    assert sorted(c.split for c in cases) == ["test", "train", "train"]
    for case in cases:
        image, label = read_volume(case.image), read_volume(case.mask)
        assert image.shape == label.shape and image.geometry.matches(label.geometry)
        assert (out / "organs" / f"{case.name}.nii.gz").is_file()


def test_cli_phantom_brain_and_skull(tmp_path, capsys):
    out = tmp_path / "b"
    args = ["phantom", "brain", "--out", str(out), "--n-pathological", "1", "--n-normal", "1", "--spacing", "3", "3", "3", "--skull"]
    assert main(args) == 0
    assert "1 pathological, 1 normal" in capsys.readouterr().out
    image, mask, organs = _read(out, "BRAIN-N001")
    assert float(image[organs == 0].max()) > 0, "with --skull the head around the brain is imaged"
    assert json.loads((out / "phantom.json").read_text())["settings"]["skull_stripped"] is False
    with pytest.raises(LeFusionError, match="--fov belongs to the chest phantom"):
        write_phantom("brain", tmp_path / "x", fov_mm=(100.0, 100.0, 100.0))
    with pytest.raises(LeFusionError, match="--skull belongs to the brain phantom"):
        write_phantom("chest", tmp_path / "x", skull=True)


def test_bad_options_are_named(tmp_path):
    with pytest.raises(LeFusionError, match="spacing"):
        write_brain_phantom(tmp_path, spacing=(0.1, 1.0, 1.0))
    with pytest.raises(LeFusionError, match="n_test"):
        write_brain_phantom(tmp_path, n_pathological=1, n_test=2)
    with pytest.raises(LeFusionError, match="layout"):
        write_brain_phantom(tmp_path, layout="bids")


def test_missing_nilearn_names_the_extra(monkeypatch):
    from lefusion.phantoms import brain_template

    real = importlib.util.find_spec
    monkeypatch.setattr(brain_template.importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(LeFusionError, match=r"pip install 'lefusion\[brain\]'"):
        brain_template.template_folder()


def test_preview_shows_three_planes(brain_dir, tmp_path):
    from PIL import Image

    from lefusion.phantoms import render_phantom_preview

    png = render_phantom_preview(brain_dir, tmp_path / "brain.png")
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[1] > 3 * 80 and pixels.shape[0] > 2 * 80
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert red.sum() > 10, "lesion outlines are drawn"
