"""Export real + synthetic cases as an nnU-Net v2 raw dataset.

    DatasetNNN_Name/
        dataset.json              channel_names, labels (consecutive 0..K), numTraining, file_ending
        imagesTr/{case}_0000.nii.gz   real pathological training cases, then synthetic ones ("syn<k>_" + name)
        labelsTr/{case}.nii.gz
        imagesTs/{case}_0000.nii.gz   the real held-out test cases (same split as `evaluate segmentation`)
        labelsTs/{case}.nii.gz        their labels (nnU-Net ignores this folder; handy for scoring)
        lefusion_export.json      where every case came from, the split, the label mapping

nnU-Net v2 requires label ids 0..K without gaps: ids that are not consecutive (e.g. {0, 3}) are
remapped in order and the mapping is recorded in dataset.json under "lefusion". The channel name is
"CT" for CT (nnU-Net then uses its CT normalisation) and "MRI" otherwise (z-score). Images keep their
voxel type and geometry; labels are written with their image's geometry. Synthetic cases made from
a test case are left out, as in the benchmark. The folder is built under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.roi import validate_pair
from ..data.sources import LabelScheme, Modality, drop_leaking, label_scheme, read_synthetic_set, split_real
from ..errors import LeFusionError
from ..io import Volume, atomic_write_text, read_volume, write_volume

FILE_ENDING = ".nii.gz"
_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class ExportSummary:
    """What was written: folder, case counts, label mapping (source id -> nnU-Net id), split and
    integrity-check sentences."""

    folder: Path
    n_real: int
    n_synthetic: int
    n_test: int
    n_dropped: int
    label_mapping: dict[int, int]
    split_note: str
    integrity: str

    def describe(self) -> str:
        remap = {k: v for k, v in self.label_mapping.items() if k != v}
        lines = [
            f"nnU-Net raw dataset: {self.folder}",
            f"  imagesTr: {self.n_real} real + {self.n_synthetic} synthetic cases"
            + (f" ({self.n_dropped} synthetic made from test cases left out)" if self.n_dropped else ""),
            f"  imagesTs: {self.n_test} real test cases ({self.split_note})",
            f"  labels remapped (source -> nnU-Net): {remap}" if remap else "  labels: source ids kept (already consecutive)",
            f"  {self.integrity}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Entry:
    case_id: str
    image: Path
    label: Path
    test: bool
    origin: str  # "real" or the synthetic folder


def dataset_folder(out: str | Path, dataset_id: int | None, name: str | None) -> Path:
    """The dataset folder: `out` itself when it is named DatasetNNN_Name (id / name must agree if
    given), else out / DatasetNNN_Name from `dataset_id` and `name`."""
    out = Path(out)
    match = _DATASET_FOLDER.match(out.name)
    if match:
        found_id, found_name = int(match.group(1)), match.group(2)
        if (dataset_id is not None and dataset_id != found_id) or (name is not None and name != found_name):
            raise LeFusionError(
                f"{out}: folder name says dataset {found_id} '{found_name}', but --dataset-id {dataset_id} --name {name} were given"
            )
        dataset_id, name = found_id, found_name
    elif dataset_id is None or name is None:
        raise LeFusionError(f"{out}: name the folder DatasetNNN_Name (nnU-Net's convention) or give --dataset-id and --name")
    if not 1 <= dataset_id <= 999:
        raise LeFusionError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if not _NAME.match(name):
        raise LeFusionError(f"dataset name {name!r}: use letters, digits, '_' and '-'")
    return out if match else out / f"Dataset{dataset_id:03d}_{name}"


def _entries(real_root: Path, synthetic: Sequence[Path], test_fraction: float, split_seed: int) -> tuple[list[_Entry], str, int]:
    """Every case to write (real train, synthetic, real test), the split note, and the number of
    synthetic cases dropped for coming from a test case."""
    split = split_real(real_root, test_fraction, split_seed)
    entries = [_Entry(c.name, c.image, c.mask, False, "real") for c in split.train]  # type: ignore[arg-type]
    dropped = 0
    for k, folder in enumerate(synthetic, 1):
        kept, n = drop_leaking(read_synthetic_set(Path(folder)), split)
        dropped += n
        entries += [_Entry(f"syn{k}_{c.name}", c.image, c.label, False, str(folder)) for c in kept]
    entries += [_Entry(c.name, c.image, c.mask, True, "real") for c in split.test]  # type: ignore[arg-type]
    seen: dict[str, _Entry] = {}
    for entry in entries:
        if entry.case_id in seen:
            raise LeFusionError(f"{entry.image}: case id {entry.case_id!r} is also used by {seen[entry.case_id].image}")
        seen[entry.case_id] = entry
    return entries, split.note, dropped


def _write_case(entry: _Entry, root: Path, scheme: LabelScheme, lut: np.ndarray) -> None:
    """Image as it is, label remapped to nnU-Net ids, both with the image's geometry."""
    image, label = read_volume(entry.image), read_volume(entry.label)
    validate_pair(image, label, scheme.lesion_labels, scheme.all_labels, entry.image, entry.label, require_lesion=False)
    images, labels = ("imagesTs", "labelsTs") if entry.test else ("imagesTr", "labelsTr")
    write_volume(image, root / images / f"{entry.case_id}_0000{FILE_ENDING}")
    ids = lut[np.rint(label.array).astype(np.int64)]
    write_volume(Volume(ids.astype(np.uint8), image.geometry), root / labels / f"{entry.case_id}{FILE_ENDING}")


def _dataset_json(name: str, scheme: LabelScheme, mapping: dict[int, int], n_train: int, note: str) -> dict:
    return {
        "name": name,
        "description": "real and synthetic (LeFusion) lesion cases exported by lefusion",
        "channel_names": {"0": "CT" if scheme.modality == "ct" else "MRI"},
        "labels": {scheme.name(source): target for source, target in mapping.items()},
        "numTraining": n_train,
        "file_ending": FILE_ENDING,
        "lefusion": {
            "label_mapping": {str(k): v for k, v in mapping.items()},
            "lesion_labels": list(scheme.lesion_labels),
            "test_split": note,
        },
    }


def _integrity(folder: Path) -> str:
    """nnU-Net's own dataset check when nnunetv2 is installed (it is not a dependency)."""
    try:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    except ImportError:
        return "nnunetv2 is not installed: nnU-Net's dataset integrity check was skipped"
    try:
        verify_dataset_integrity(str(folder), num_processes=1)
    except Exception as exc:  # nnU-Net reports problems as assertions and RuntimeErrors
        raise LeFusionError(f"{folder}: written, but nnU-Net's dataset integrity check failed: {exc}") from exc
    return "nnU-Net's dataset integrity check passed"


def export_nnunet(
    real_root: str | Path,
    out: str | Path,
    synthetic: Sequence[str | Path] = (),
    dataset_id: int | None = None,
    name: str | None = None,
    lesion_labels: tuple[int, ...] | None = None,
    modality: Modality | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    overwrite: bool = False,
) -> ExportSummary:
    """Write the nnU-Net raw dataset (layout in the module docstring); returns what was written.
    LeFusionError for bad input (unreadable or mismatched cases, unknown labels, an existing folder
    without `overwrite`, a bad dataset id or name)."""
    real_root = Path(real_root)
    folder = dataset_folder(out, dataset_id, name)
    if folder.exists() and not overwrite:
        raise LeFusionError(f"{folder}: already exists; choose another folder or pass --overwrite")
    scheme = label_scheme(real_root, lesion_labels, modality)
    entries, note, dropped = _entries(real_root, [Path(s) for s in synthetic], test_fraction, split_seed)
    mapping = {source: target for target, source in enumerate(scheme.all_labels)}
    lut = np.zeros(max(mapping) + 1, dtype=np.int64)
    lut[list(mapping)] = list(mapping.values())
    n_train = sum(not e.test for e in entries)

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for entry in entries:
            _write_case(entry, tmp, scheme, lut)
        atomic_write_text(
            tmp / "dataset.json", json.dumps(_dataset_json(folder.name.split("_", 1)[1], scheme, mapping, n_train, note), indent=2)
        )
        provenance = {
            "real": str(real_root),
            "synthetic": [str(s) for s in synthetic],
            "test_split": note,
            "dropped_synthetic": dropped,
            "cases": {
                e.case_id: {"image": str(e.image), "label": str(e.label), "split": "test" if e.test else "train", "origin": e.origin}
                for e in entries
            },
        }
        atomic_write_text(tmp / "lefusion_export.json", json.dumps(provenance, indent=2))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it owner-only
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_synthetic = sum(e.origin != "real" for e in entries)
    return ExportSummary(folder, n_train - n_synthetic, n_synthetic, len(entries) - n_train, dropped, mapping, note, _integrity(folder))


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename the finished `tmp` to `folder`; an existing `folder` is moved aside first and deleted
    after, so `folder` is never half-written."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
