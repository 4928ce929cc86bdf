"""Case discovery in the LeFusion LIDC, EMIDEC, plain and nnU-Net raw layouts, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lefusion.data.layouts import (
    EMIDEC,
    LIDC,
    NNUNET,
    PLAIN,
    Case,
    detect_layout,
    find_cases,
    lidc_mask_name,
)
from lefusion.errors import LeFusionError
from lefusion.io import write_volume


def _vol(path: Path, value: int = 0) -> Path:
    return write_volume(np.full((2, 3, 4), value, dtype=np.int16), path)


def _lidc_tree(root: Path) -> Path:
    for name in ("LIDC-IDRI-0001_CVol_1", "LIDC-IDRI-0002_CVol_1", "LIDC-IDRI-0002_CVol_2"):
        _vol(root / "Pathological" / "Image" / f"{name}.nii.gz")
        _vol(root / "Pathological" / "Mask" / f"{name.replace('Vol_', 'Mask_')}.nii.gz", 1)
    (root / "Pathological" / "test.txt").write_text("LIDC-IDRI-0002_CVol_2\n\n")
    _vol(root / "Normal" / "Image" / "LIDC-IDRI-0100_Vol_1.nii.gz")
    _vol(root / "Normal" / "Mask" / "LIDC-IDRI-0100_Mask_1.nii.gz", 1)
    return root


def test_lidc_mask_name_replaces_last_vol() -> None:
    assert lidc_mask_name("LIDC-IDRI-0001_CVol_1.nii.gz") == "LIDC-IDRI-0001_CMask_1.nii.gz"
    assert lidc_mask_name("Vol_a_Vol_2.nii.gz") == "Vol_a_Mask_2.nii.gz"
    assert lidc_mask_name("plain.nii.gz") == "plain.nii.gz"


def test_lidc_layout(tmp_path: Path) -> None:
    root = _lidc_tree(tmp_path / "LIDC")
    assert detect_layout(root) == LIDC
    cases = find_cases(root)
    assert [c.name for c in cases] == [
        "LIDC-IDRI-0001_CVol_1",
        "LIDC-IDRI-0002_CVol_1",
        "LIDC-IDRI-0002_CVol_2",
        "LIDC-IDRI-0100_Vol_1",
    ]
    by_name = {c.name: c for c in cases}
    first = by_name["LIDC-IDRI-0001_CVol_1"]
    assert first == Case(
        "LIDC-IDRI-0001_CVol_1",
        root / "Pathological" / "Image" / "LIDC-IDRI-0001_CVol_1.nii.gz",
        root / "Pathological" / "Mask" / "LIDC-IDRI-0001_CMask_1.nii.gz",
        "pathological",
        "train",
    )
    assert by_name["LIDC-IDRI-0002_CVol_2"].split == "test"
    assert by_name["LIDC-IDRI-0002_CVol_1"].split == "train"
    normal = by_name["LIDC-IDRI-0100_Vol_1"]
    assert normal.role == "normal" and normal.mask == root / "Normal" / "Mask" / "LIDC-IDRI-0100_Mask_1.nii.gz"
    assert [c.name for c in find_cases(root, role="normal")] == ["LIDC-IDRI-0100_Vol_1"]
    assert len(find_cases(root, role="pathological")) == 3


def test_lidc_group_folder_directly(tmp_path: Path) -> None:
    root = _lidc_tree(tmp_path / "LIDC")
    patho = find_cases(root / "Pathological")
    assert detect_layout(root / "Pathological") == LIDC
    assert {c.role for c in patho} == {"pathological"}
    assert [c.split for c in patho] == ["train", "train", "test"]
    normal = find_cases(root / "Normal")
    assert [(c.name, c.role) for c in normal] == [("LIDC-IDRI-0100_Vol_1", "normal")]


def test_emidec_layout(tmp_path: Path) -> None:
    root = tmp_path / "EMIDEC"
    for name in ("Case_P001", "Case_P005"):
        _vol(root / "Pathological" / "images" / f"{name}.nii.gz")
        _vol(root / "Pathological" / "labels" / f"{name}.nii.gz", 3)
    _vol(root / "Normal" / "images" / "Case_N002.nii.gz")
    assert detect_layout(root) == EMIDEC
    cases = find_cases(root)
    assert [(c.name, c.role, c.split) for c in cases] == [
        ("Case_N002", "normal", "train"),
        ("Case_P001", "pathological", "train"),
        ("Case_P005", "pathological", "test"),  # held out by the public release
    ]
    assert cases[0].mask is None
    assert cases[1].mask == root / "Pathological" / "labels" / "Case_P001.nii.gz"


def test_emidec_flat_folder_roles_from_names(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for name in ("Case_P012", "Case_N003"):
        _vol(root / "images" / f"{name}.nii.gz")
        _vol(root / "labels" / f"{name}.nii.gz", 2)
    assert detect_layout(root) == EMIDEC
    cases = find_cases(root)
    assert [(c.name, c.role) for c in cases] == [("Case_N003", "normal"), ("Case_P012", "pathological")]
    assert all(c.mask is not None for c in cases)


@pytest.mark.parametrize("mask_dir", ["masks", "labels"])
def test_plain_layout(tmp_path: Path, mask_dir: str) -> None:
    for name in ("b_scan", "a_scan"):
        _vol(tmp_path / "images" / f"{name}.nrrd")
        _vol(tmp_path / mask_dir / f"{name}.nrrd", 1)
    assert detect_layout(tmp_path) == PLAIN
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["a_scan", "b_scan"]
    assert cases[0].mask == tmp_path / mask_dir / "a_scan.nrrd"
    assert {(c.role, c.split) for c in cases} == {("pathological", "train")}


def _nnunet_tree(root: Path, meta: dict | str) -> Path:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return root


def test_nnunet_layout_honours_file_ending(tmp_path: Path) -> None:
    root = _nnunet_tree(tmp_path / "Dataset001_Lung", {"channel_names": {"0": "CT"}, "file_ending": ".mha"})
    for case in ("lung_002", "lung_001"):
        _vol(root / "imagesTr" / f"{case}_0000.mha")
        _vol(root / "labelsTr" / f"{case}.mha", 1)
    _vol(root / "imagesTr" / "ignored_0000.nii.gz")  # wrong ending: not a case of this dataset
    _vol(root / "imagesTs" / "lung_100_0000.mha")
    assert detect_layout(root) == NNUNET
    cases = find_cases(root)
    assert [(c.name, c.split) for c in cases] == [("lung_001", "train"), ("lung_002", "train"), ("lung_100", "test")]
    assert cases[0].image == root / "imagesTr" / "lung_001_0000.mha"
    assert cases[0].mask == root / "labelsTr" / "lung_001.mha"
    assert cases[2].mask is None


# ---------------------------------------------------------------------------------------- errors


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(LeFusionError, match="nowhere.*not found"):
        find_cases(tmp_path / "nowhere")


def test_unrecognised_layout_lists_layouts(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(LeFusionError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "not recognised" in message
    for layout in ("LIDC", "EMIDEC", "plain", "nnU-Net"):
        assert layout in message


def test_folder_without_cases(tmp_path: Path) -> None:
    (tmp_path / "Pathological" / "Image").mkdir(parents=True)
    (tmp_path / "Pathological" / "Mask").mkdir()
    (tmp_path / "Pathological" / "Image" / "notes.txt").write_text("no volumes here")
    with pytest.raises(LeFusionError, match=r"Image: no cases"):
        find_cases(tmp_path)


def test_image_without_mask(tmp_path: Path) -> None:
    root = _lidc_tree(tmp_path)
    (root / "Pathological" / "Mask" / "LIDC-IDRI-0002_CMask_1.nii.gz").unlink()
    with pytest.raises(LeFusionError, match=r"LIDC-IDRI-0002_CVol_1\.nii\.gz: no mask found.*LIDC-IDRI-0002_CMask_1"):
        find_cases(root)
    # Asking for normal cases only does not trip over the pathological folder.
    assert len(find_cases(root, role="normal")) == 1


def test_normal_mask_folder_must_be_complete(tmp_path: Path) -> None:
    root = _lidc_tree(tmp_path)
    _vol(root / "Normal" / "Image" / "LIDC-IDRI-0101_Vol_1.nii.gz")
    with pytest.raises(LeFusionError, match="LIDC-IDRI-0101_Vol_1.nii.gz: no mask found"):
        find_cases(root, role="normal")


def test_pathological_without_label_folder(tmp_path: Path) -> None:
    _vol(tmp_path / "Pathological" / "images" / "Case_P001.nii.gz")
    with pytest.raises(LeFusionError, match=r"Case_P001\.nii\.gz: pathological case needs a mask"):
        find_cases(tmp_path)


def test_nnunet_missing_label(tmp_path: Path) -> None:
    root = _nnunet_tree(tmp_path / "ds", {"channel_names": {"0": "CT"}})
    _vol(root / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(LeFusionError, match=r"a_0000\.nii\.gz: no label found.*labelsTr"):
        find_cases(root)


def test_nnunet_multichannel_rejected(tmp_path: Path) -> None:
    root = _nnunet_tree(tmp_path / "ds", {"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz"})
    _vol(root / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(LeFusionError, match=r"dataset\.json: .*single-channel"):
        find_cases(root)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_nnunet_unreadable_dataset_json(tmp_path: Path, text: str) -> None:
    root = _nnunet_tree(tmp_path / "ds", text)
    with pytest.raises(LeFusionError, match=r"dataset\.json: unreadable"):
        find_cases(root)


def test_bad_role_and_layout_names(tmp_path: Path) -> None:
    root = _lidc_tree(tmp_path)
    with pytest.raises(LeFusionError, match="unknown role"):
        find_cases(root, role="healthy")
    with pytest.raises(LeFusionError, match="unknown dataset layout"):
        find_cases(root, layout="decathlon")
