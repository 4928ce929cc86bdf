"""Organ masks: the built-in lung mask against the chest phantom's true lung labels, and organ
masks read from label maps (TotalSegmentator lobe ids) with their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lefusion.errors import LeFusionError
from lefusion.io import Geometry, Volume, read_volume, write_volume
from lefusion.masks.organs import LEFT_LUNG, RIGHT_LUNG, TOTALSEGMENTATOR_LUNG_LOBES, lung_labels, lung_mask, read_organ_mask
from lefusion.phantoms.chest import make_chest_case
from lefusion.phantoms.chest_labels import LUNG, LUNG_LEFT, LUNG_RIGHT, ORGAN_LABELS


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module", params=[("ras", (6.0, 4.0, 4.0)), ("oblique", (5.0, 2.5, 2.5))], ids=["ras-6x4x4", "oblique-5x2.5x2.5"])
def case(request) -> tuple[Volume, np.ndarray, np.ndarray, np.ndarray]:
    """A pathological phantom chest stored RAS (x, y flipped) or on a tilted grid, anisotropic."""
    kind, spacing = request.param
    image, mask, organs, geometry, _ = make_chest_case(np.random.default_rng([0, 21, 7]), 3, kind, spacing)
    ct = Volume(image, geometry)
    return ct, mask > 0, organs, lung_labels(ct)


def test_lungs_match_the_phantom(case) -> None:
    """Dice with the true lungs (lobes 10-14) 0.98-0.99 on these coarse grids (0.990 on a default
    2.5 x 0.8 x 0.8 mm chest); each side is labelled as its own lung."""
    _, _, organs, labels = case
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) == {0, RIGHT_LUNG, LEFT_LUNG}
    assert _dice(labels > 0, np.isin(organs, LUNG)) > 0.975
    assert _dice(labels == RIGHT_LUNG, np.isin(organs, LUNG_RIGHT)) > 0.97
    assert _dice(labels == LEFT_LUNG, np.isin(organs, LUNG_LEFT)) > 0.97


def test_airways_and_outside_air_excluded(case) -> None:
    ct, _, organs, labels = case
    lungs = labels > 0
    trachea = organs == ORGAN_LABELS["trachea"]
    assert lungs[trachea].mean() < 0.05, "trachea and main bronchi are not lung"
    air_outside = (ct.array < -900) & (organs == 0)  # air round the body, gas, airway lumens
    assert lungs[air_outside].mean() < 0.01
    assert not lungs[:, :2].any() and not lungs[:, :, :2].any()  # nothing at the in-plane border


def test_vessels_and_nodules_inside_included(case) -> None:
    ct, nodules, organs, labels = case
    lungs = labels > 0
    dense = np.isin(organs, LUNG) & (ct.array > -400)  # vessels, bronchial walls, nodules
    assert lungs[dense].mean() > 0.9
    assert nodules.any() and lungs[nodules].mean() > 0.98


def test_no_lungs_or_not_ct_is_a_clear_error() -> None:
    image, _, organs, geometry, _ = make_chest_case(np.random.default_rng([0, 20, 0]), 0, "identity", (6.0, 4.0, 4.0))
    below = np.nonzero(~np.isin(organs, LUNG).any(axis=(1, 2)))[0]
    abdomen = image[: below[below < image.shape[0] // 2].max() + 1]  # the slices under the lungs
    with pytest.raises(LeFusionError, match="abdomen.nii.gz: no lung found"):
        lung_labels(Volume(abdomen, geometry), name="abdomen.nii.gz")
    with pytest.raises(LeFusionError, match="needs CT in Hounsfield units"):
        lung_mask(Volume((image.astype(np.float32) + 1024) / 4096, geometry), name="norm.nii.gz")
    with pytest.raises(LeFusionError, match="expected a Volume"):
        lung_mask(image)  # type: ignore[arg-type]


def test_lung_mask_from_a_file(tmp_path: Path) -> None:
    image, _, organs, geometry, _ = make_chest_case(np.random.default_rng([1, 20, 1]), 0, "flip_z", (6.0, 4.0, 4.0))
    path = write_volume(image, tmp_path / "ct.nii.gz", geometry)
    mask = lung_mask(path)
    assert mask.dtype == bool and _dice(mask, np.isin(organs, LUNG)) > 0.975
    with pytest.raises(LeFusionError, match="missing.nii.gz: file not found"):
        lung_mask(tmp_path / "missing.nii.gz")


def test_read_organ_mask(tmp_path: Path) -> None:
    image, _, organs, geometry, _ = make_chest_case(np.random.default_rng([2, 20, 0]), 0, "identity", (6.0, 4.0, 4.0))
    ct = write_volume(image, tmp_path / "ct.nii.gz", geometry)
    labels = write_volume(organs, tmp_path / "labels.nii.gz", geometry)
    lungs = read_organ_mask(labels, like=ct)  # TotalSegmentator lobes by default
    assert TOTALSEGMENTATOR_LUNG_LOBES == LUNG and np.array_equal(lungs, np.isin(organs, LUNG))
    assert np.array_equal(read_organ_mask(labels, (ORGAN_LABELS["liver"],), like=read_volume(ct)), organs == ORGAN_LABELS["liver"])
    assert read_organ_mask(labels, (10, 11, 200)).any()  # some absent is fine unless require_all
    # labels=None (place/augment without --organ-labels): the lobes when present, else any non-zero label
    assert np.array_equal(read_organ_mask(labels, None), lungs)
    binary = write_volume(np.isin(organs, LUNG).astype(np.uint8), tmp_path / "binary.nii.gz", geometry)
    assert np.array_equal(read_organ_mask(binary, None, like=ct), lungs)
    with pytest.raises(LeFusionError, match=r"binary.nii.gz: organ label\(s\) 10"):
        read_organ_mask(binary)  # the explicit default still asks for the lobes
    with pytest.raises(LeFusionError, match=r"labels.nii.gz: organ label\(s\) 200 absent; labels in the file: 1, 5"):
        read_organ_mask(labels, (200,))
    with pytest.raises(LeFusionError, match="labels.nii.gz: organ label.s. 200 absent"):
        read_organ_mask(labels, (10, 200), require_all=True)
    moved = write_volume(organs, tmp_path / "moved.nii.gz", Geometry(geometry.spacing, (0.0, 0.0, 0.0), geometry.direction))
    with pytest.raises(LeFusionError, match="moved.nii.gz: label map grid .* does not match the scan .*ct.nii.gz"):
        read_organ_mask(moved, like=ct)
    small = write_volume(organs[:-1], tmp_path / "small.nii.gz", geometry)
    with pytest.raises(LeFusionError, match="small.nii.gz: label map grid"):
        read_organ_mask(small, like=ct)
    empty = write_volume(np.zeros_like(organs), tmp_path / "empty.nii.gz", geometry)
    with pytest.raises(LeFusionError, match="empty.nii.gz: empty label map"):
        read_organ_mask(empty)
    soft = write_volume(organs.astype(np.float32) * 0.5, tmp_path / "soft.nii.gz", geometry)
    with pytest.raises(LeFusionError, match="soft.nii.gz: not a label map"):
        read_organ_mask(soft)
    with pytest.raises(LeFusionError, match="nope.nii.gz: file not found"):
        read_organ_mask(tmp_path / "nope.nii.gz")


@pytest.mark.slow
def test_default_chest_dice() -> None:
    """The figure quoted in the README: Dice on a default 2.5 x 0.8 x 0.8 mm chest (~25 s)."""
    image, mask, organs, geometry, _ = make_chest_case(np.random.default_rng([0, 21, 0]), 2, "identity")
    labels = lung_labels(Volume(image, geometry))
    assert _dice(labels > 0, np.isin(organs, LUNG)) > 0.985
    assert (labels > 0)[organs == ORGAN_LABELS["trachea"]].mean() < 0.02
