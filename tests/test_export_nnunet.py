"""nnU-Net raw export, validated by re-reading it: files, geometry, dataset.json, label remapping, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lefusion.cli import main
from lefusion.data.layouts import find_cases
from lefusion.errors import LeFusionError
from lefusion.export import export_nnunet
from lefusion.export import nnunet as nnunet_module
from lefusion.io import Geometry, read_volume, write_volume
from lefusion.phantoms import write_cardiac_phantom, write_lung_phantom

from .test_segmentation_benchmark import write_fake_generated

ROI = (8, 16, 16)


@pytest.fixture(scope="module")
def lung(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "lung"
    write_lung_phantom(root, n_pathological=5, n_normal=2, n_test=2, seed=1, roi_shape=ROI, spacing=(2.0, 0.7, 0.7))
    return root


def _names(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")}


def test_export_lung_with_synthetic_sets(lung, tmp_path):
    normal = write_fake_generated(tmp_path / "gen_n", lung / "Normal", "normal")
    path_set = write_fake_generated(tmp_path / "gen_p", lung / "Pathological", "pathological")
    summary = export_nnunet(lung, tmp_path / "nnUNet_raw", synthetic=[normal, path_set], dataset_id=501, name="LungSyn")
    root = tmp_path / "nnUNet_raw" / "Dataset501_LungSyn"
    assert summary.folder == root and summary.n_real == 3 and summary.n_synthetic == 2 + 3 and summary.n_test == 2
    assert summary.n_dropped == 2  # the P' cases made on the 2 test cases
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "nodule": 1}
    assert meta["numTraining"] == 8 and meta["file_ending"] == ".nii.gz"
    train_ids = _names(root / "imagesTr", "_0000.nii.gz")
    assert len(train_ids) == 8 and train_ids == _names(root / "labelsTr", ".nii.gz")
    assert sum(i.startswith("syn1_") for i in train_ids) == 2 and sum(i.startswith("syn2_") for i in train_ids) == 3
    test_names = set((lung / "Pathological" / "test.txt").read_text().split())
    assert _names(root / "imagesTs", "_0000.nii.gz") == test_names == _names(root / "labelsTs", ".nii.gz")
    for case in find_cases(lung, role="pathological"):
        folder = "imagesTs" if case.name in test_names else "imagesTr"
        source, exported = read_volume(case.image), read_volume(root / folder / f"{case.name}_0000.nii.gz")
        assert np.array_equal(source.array, exported.array) and exported.array.dtype == source.array.dtype
        assert exported.geometry.matches(source.geometry)
        label = read_volume(root / folder.replace("images", "labels") / f"{case.name}.nii.gz")
        assert np.array_equal(label.array, read_volume(case.mask).array) and label.geometry.matches(source.geometry)
    provenance = json.loads((root / "lefusion_export.json").read_text())
    assert len(provenance["cases"]) == 10 and provenance["dropped_synthetic"] == 2
    assert not list(root.parent.glob(".*"))  # no temporary folder left behind
    # the export is itself a dataset lefusion reads, with the same test split
    assert {c.name for c in find_cases(root) if c.split == "test"} == test_names


def _plain_dataset(root: Path, labels: tuple[int, ...]) -> Path:
    geometry = Geometry(spacing=(3.0, 1.0, 1.0), origin=(10.0, -5.0, 2.0))
    for i in range(3):
        image = np.random.default_rng(i).normal(100, 20, (4, 8, 8)).astype(np.float32)
        label = np.zeros((4, 8, 8), dtype=np.uint8)
        for k, value in enumerate(labels):
            label[1 + k, 2:5, 2:5] = value
        write_volume(image, root / "images" / f"case{i}.nii.gz", geometry)
        write_volume(label, root / "labels" / f"case{i}.nii.gz", geometry)
    return root


def test_labels_that_are_not_consecutive_are_remapped(tmp_path):
    data = _plain_dataset(tmp_path / "plain", (3,))
    with pytest.raises(LeFusionError, match=r"unknown label values \[3\]"):
        export_nnunet(data, tmp_path / "Dataset007_Plain")
    summary = export_nnunet(data, tmp_path / "Dataset007_Plain", lesion_labels=(3,), modality="mri")
    assert summary.label_mapping == {0: 0, 3: 1} and summary.n_real == 2 and summary.n_test == 1  # seeded split
    meta = json.loads((summary.folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "label3": 1} and meta["lefusion"]["label_mapping"] == {"0": 0, "3": 1}
    assert meta["channel_names"] == {"0": "MRI"} and "no test split" in meta["lefusion"]["test_split"]
    for path in (summary.folder / "labelsTr").glob("*.nii.gz"):
        label = read_volume(path)
        assert set(np.unique(label.array)) == {0, 1} and label.geometry.origin == (10.0, -5.0, 2.0)
        assert label.geometry.spacing == (3.0, 1.0, 1.0)


def test_emidec_export_keeps_labels_and_says_mri(tmp_path):
    root = tmp_path / "cardiac"
    write_cardiac_phantom(root, n_pathological=4, n_normal=1, seed=0, roi_shape=(4, 16, 16))
    summary = export_nnunet(root, tmp_path / "Dataset012_Heart")
    meta = json.loads((summary.folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"}
    assert meta["labels"] == {"background": 0, "cavity": 1, "myocardium": 2, "MI": 3, "PMO": 4}
    assert summary.label_mapping == {v: v for v in range(5)}


def test_bad_input_and_atomicity(lung, tmp_path, monkeypatch):
    with pytest.raises(LeFusionError, match="DatasetNNN_Name"):
        export_nnunet(lung, tmp_path / "somewhere")
    with pytest.raises(LeFusionError, match="folder name says dataset 3"):
        export_nnunet(lung, tmp_path / "Dataset003_Lung", dataset_id=4)
    with pytest.raises(LeFusionError, match="1..999"):
        export_nnunet(lung, tmp_path, dataset_id=1000, name="Lung")
    with pytest.raises(LeFusionError, match="synthetic set folder not found"):
        export_nnunet(lung, tmp_path / "Dataset003_Lung", synthetic=[tmp_path / "missing"])

    calls = {"n": 0}
    original = nnunet_module.write_volume

    def failing_write(*args, **kwargs):  # the disk fills up halfway through
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(nnunet_module, "write_volume", failing_write)
    with pytest.raises(OSError):
        export_nnunet(lung, tmp_path / "Dataset003_Lung")
    assert not (tmp_path / "Dataset003_Lung").exists() and not list(tmp_path.glob(".Dataset003_Lung*"))
    monkeypatch.setattr(nnunet_module, "write_volume", original)

    export_nnunet(lung, tmp_path / "Dataset003_Lung")
    with pytest.raises(LeFusionError, match="already exists"):
        export_nnunet(lung, tmp_path / "Dataset003_Lung")
    assert export_nnunet(lung, tmp_path / "Dataset003_Lung", overwrite=True).n_real == 3


def test_cli_export(lung, tmp_path, capsys):
    assert main(["export", "nnunet", "--real", str(lung), "--out", str(tmp_path), "--dataset-id", "42", "--name", "Lung"]) == 0
    out = capsys.readouterr().out
    assert "Dataset042_Lung" in out and "integrity check" in out
    assert main(["export", "nnunet", "--real", str(lung), "--out", str(tmp_path / "x")]) == 2
    assert "DatasetNNN_Name" in capsys.readouterr().err
