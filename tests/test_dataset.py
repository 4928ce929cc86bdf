"""Lesion histograms, the in-memory ROI dataset and the flip augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from lefusion.config import PreprocessConfig
from lefusion.data import LesionRoiDataset, find_cases, lesion_histogram, random_flip, wasserstein_1d_hist
from lefusion.errors import LeFusionError
from lefusion.io import write_volume

# ------------------------------------------------------------------------------------- histograms


def test_histogram_matches_histc_and_sums_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 4, 6, 6, generator=gen) * 2 - 1
    image[0, 0, 0, 0], image[0, 0, 0, 1] = -1.0, 1.0  # both range ends are counted
    label = torch.zeros(1, 4, 6, 6, dtype=torch.int64)
    label[0, :2] = 3
    label[0, 0, 0, :2] = 3
    label[0, 3, :3] = 4
    hist = lesion_histogram(image, label, (3, 4, 9), bins=16)
    assert hist.shape == (48,) and hist.dtype == torch.float32
    for i, lesion_id in enumerate((3, 4)):
        inside = label == lesion_id
        expected = torch.histc(image[inside], bins=16, min=-1, max=1) / inside.sum()
        assert torch.allclose(hist[16 * i : 16 * (i + 1)], expected)
        assert hist[16 * i : 16 * (i + 1)].sum() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(hist[32:] == 0)  # label 9 is absent
    assert hist[0] > 0 and hist[15] > 0
    # (D, H, W) inputs give the same answer.
    assert torch.equal(lesion_histogram(image[0], label[0], (3, 4, 9)), hist)


def test_histogram_known_bins() -> None:
    image = torch.tensor([-1.0, -0.99, 0.0, 0.5, 1.0, 0.3]).view(1, 1, 2, 3)
    label = torch.tensor([1, 1, 1, 1, 1, 0]).view(1, 1, 2, 3)
    hist = lesion_histogram(image, label, (1,), bins=4)
    assert torch.allclose(hist, torch.tensor([0.4, 0.0, 0.2, 0.4]))


def test_wasserstein_1d_hist() -> None:
    p = torch.zeros(16)
    p[3] = 1.0
    q = torch.zeros(16)
    q[5] = 1.0
    assert wasserstein_1d_hist(p, p).item() == 0.0
    assert wasserstein_1d_hist(p, q).item() == pytest.approx(2 * 2 / 16)  # two bins, in [-1, 1] units
    assert wasserstein_1d_hist(q, p).item() == pytest.approx(wasserstein_1d_hist(p, q).item())
    batch = torch.stack([p, q * 5])  # un-normalised counts are normalised first
    assert torch.allclose(wasserstein_1d_hist(batch, torch.stack([q, q])), torch.tensor([0.25, 0.0]))
    with pytest.raises(ValueError, match="all zeros"):
        wasserstein_1d_hist(p, torch.zeros(16))


# ---------------------------------------------------------------------------------------- dataset

CONFIG = PreprocessConfig(modality="ct", roi_shape=(4, 8, 8))
SHAPE = (6, 8, 7)


def _lidc(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(-1000, 400, SHAPE).astype(np.int16)
        mask = np.zeros(SHAPE, np.uint8)
        mask[2 + i % 2, 3:5, 2 : 4 + i] = 1
        write_volume(image, root / "Pathological" / "Image" / f"LIDC-IDRI-{i:04d}_CVol_1.nii.gz")
        write_volume(mask, root / "Pathological" / "Mask" / f"LIDC-IDRI-{i:04d}_CMask_1.nii.gz")
    return root


def test_lidc_dataset_items(tmp_path: Path) -> None:
    cases = find_cases(_lidc(tmp_path))
    data = LesionRoiDataset(cases, CONFIG, (1,))
    assert len(data) == 3
    item = data[1]
    assert item["name"] == "LIDC-IDRI-0001_CVol_1"
    assert item["x"].shape == (1, 4, 8, 8) and item["x"].dtype == torch.float32
    assert item["masks"].shape == (1, 4, 8, 8) and item["masks"].dtype == torch.float32
    assert item["label"].shape == (1, 4, 8, 8) and item["label"].dtype == torch.int64
    assert item["hist"].shape == (16,) and item["hist"].dtype == torch.float32
    assert torch.equal(item["masks"], (item["label"] == 1).float())
    assert item["hist"].sum() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(item["hist"], lesion_histogram(item["x"], item["label"], (1,)))
    assert item["x"].min() >= -1 and item["x"].max() <= 1
    # Lesion at original z = 3 sits at ROI z = 2 (one slice cropped at the start).
    assert item["label"][0, 2].sum() == 2 * 3 and item["label"].sum() == 2 * 3
    # Items are copies: editing one does not corrupt the cached tensors.
    item["x"].zero_()
    assert data[1]["x"].abs().sum() > 0


def _emidec(root: Path) -> Path:
    for name, with_pmo in (("Case_P001", True), ("Case_P002", False)):
        image = np.linspace(0, 300, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
        label = np.zeros(SHAPE, np.uint8)
        label[1:5, 2:6, 1:6] = 2  # myocardium
        label[3, 3:5, 2:4] = 3  # MI
        if with_pmo:
            label[2, 3, 3] = 4
        label[2, 1, 1] = 1  # LV cavity
        write_volume(image, root / "Pathological" / "images" / f"{name}.nii.gz")
        write_volume(label, root / "Pathological" / "labels" / f"{name}.nii.gz")
    return root


def test_emidec_dataset_two_classes(tmp_path: Path) -> None:
    cases = find_cases(_emidec(tmp_path))
    config = PreprocessConfig(modality="mri", roi_shape=(4, 8, 8))
    with pytest.raises(LeFusionError, match=r"Case_P001\.nii\.gz: unknown label values \[1, 2\]"):
        LesionRoiDataset(cases, config, (3, 4))
    data = LesionRoiDataset(cases, config, (3, 4), allowed_labels=(1, 2, 3, 4))
    assert data.hists.shape == (2, 32)
    with_pmo, without_pmo = data[0], data[1]
    assert with_pmo["x"].shape == (2, 4, 8, 8) and torch.equal(with_pmo["x"][0], with_pmo["x"][1])
    assert torch.equal(with_pmo["masks"][0], (with_pmo["label"][0] == 3).float())
    assert torch.equal(with_pmo["masks"][1], (with_pmo["label"][0] == 4).float())
    assert with_pmo["hist"][:16].sum() == pytest.approx(1.0) and with_pmo["hist"][16:].sum() == pytest.approx(1.0)
    assert without_pmo["hist"][16:].abs().sum() == 0 and without_pmo["masks"][1].sum() == 0


def test_dataset_errors_name_files(tmp_path: Path) -> None:
    root = _lidc(tmp_path, n=1)
    mask_path = root / "Pathological" / "Mask" / "LIDC-IDRI-0000_CMask_1.nii.gz"
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = 1  # cropped away by the centred (4, 8, 8) ROI
    write_volume(mask, mask_path)
    with pytest.raises(LeFusionError, match=r"CMask_1\.nii\.gz: the lesion lies entirely outside"):
        LesionRoiDataset(find_cases(root), CONFIG, (1,))
    write_volume(np.zeros(SHAPE, np.uint8), mask_path)
    with pytest.raises(LeFusionError, match=r"CMask_1\.nii\.gz: empty lesion mask"):
        LesionRoiDataset(find_cases(root), CONFIG, (1,))
    with pytest.raises(LeFusionError, match="no cases"):
        LesionRoiDataset([], CONFIG, (1,))


# ------------------------------------------------------------------------------------ random_flip


def _batch(n: int = 16) -> dict:
    gen = torch.Generator().manual_seed(1)
    label = (torch.rand(n, 1, 2, 5, 3, generator=gen) > 0.5).long()
    return {
        "x": torch.rand(n, 2, 2, 5, 3, generator=gen),
        "masks": label.repeat(1, 2, 1, 1, 1).float(),
        "label": label,
        "hist": torch.rand(n, 32, generator=gen),
        "name": [f"c{i}" for i in range(n)],
    }


def test_random_flip_deterministic_and_consistent() -> None:
    batch = _batch()
    original = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    out_a = random_flip(batch, torch.Generator().manual_seed(7))
    out_b = random_flip(batch, torch.Generator().manual_seed(7))
    for key in ("x", "masks", "label"):
        assert torch.equal(out_a[key], out_b[key])
        assert torch.equal(batch[key], original[key])  # input untouched
    assert out_a["hist"] is batch["hist"] and out_a["name"] == batch["name"]
    flipped = []
    for i in range(16):
        states = [
            "flip" if torch.equal(out_a[k][i], original[k][i].flip(-2)) else "same" if torch.equal(out_a[k][i], original[k][i]) else "?"
            for k in ("x", "masks", "label")
        ]
        assert len(set(states)) == 1 and states[0] != "?", states  # all three moved together
        flipped.append(states[0] == "flip")
    assert 0 < sum(flipped) < 16  # both outcomes happen for this seed
    other = random_flip(batch, torch.Generator().manual_seed(8))
    assert not torch.equal(other["x"], out_a["x"])


def test_random_flip_on_collated_dataset_batch(tmp_path: Path) -> None:
    data = LesionRoiDataset(find_cases(_lidc(tmp_path)), CONFIG, (1,))
    batch = default_collate([data[i] for i in range(len(data))])
    out = random_flip(batch, torch.Generator().manual_seed(0))
    assert out["x"].shape == (3, 1, 4, 8, 8)
    assert torch.equal(out["masks"], (out["label"] == 1).float())  # masks still match the label
    assert torch.equal(out["hist"], batch["hist"])
