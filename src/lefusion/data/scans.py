"""Whole scans to put lesions into (`lefusion place`, `lefusion augment`): a folder of them.

Understood: any dataset layout lefusion reads (its cases, with their label maps as existing
lesions; for the LIDC layout its `Normal/` scans); or a flat folder of volume files
(NIfTI/NRRD/MHA) and/or sub-folders that each hold one DICOM series (named after the sub-folder).
Organ masks, when given, live in another folder under the same names (`organ_mask_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LeFusionError
from ..io import VOLUME_SUFFIXES, dicom_series, has_volume_suffix, strip_volume_suffix
from .layouts import find_cases


@dataclass(frozen=True)
class Scan:
    """One scan: a name, its image (a file or a DICOM folder) and, if it has one, its label map."""

    name: str
    image: Path
    labels: Path | None = None


def _is_layout(root: Path) -> bool:
    return any((root / d).is_dir() for d in ("images", "Image", "imagesTr", "Pathological", "Normal"))


def find_scans(root: str | Path) -> list[Scan]:
    """The scans under `root` (module docstring), sorted by name; LeFusionError naming `root` if none."""
    root = Path(root)
    if not root.is_dir():
        raise LeFusionError(f"{root}: scan folder not found")
    if _is_layout(root):
        cases = find_cases(root)
        normal = [c for c in cases if c.role == "normal"]
        return [Scan(c.name, c.image, c.mask) for c in (normal or cases)]
    scans = [
        Scan(strip_volume_suffix(p.name), p)
        for p in sorted(root.iterdir())
        if p.is_file() and has_volume_suffix(p) and not p.name.startswith(".")
    ]
    scans += [Scan(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and dicom_series(p)]
    if not scans:
        raise LeFusionError(
            f"{root}: no scans found (volume files {', '.join(VOLUME_SUFFIXES)}, DICOM series folders, or a dataset layout)"
        )
    names = [s.name for s in scans]
    if len(set(names)) != len(names):
        raise LeFusionError(f"{root}: two scans share a name ({sorted(n for n in names if names.count(n) > 1)[0]})")
    return sorted(scans, key=lambda s: s.name)


def organ_mask_path(folder: str | Path, scan: Scan) -> Path:
    """The organ label map of `scan` in `folder`: the same name with any volume suffix (a DICOM
    scan's mask is NAME.nii.gz). LeFusionError naming what was looked for when it is missing."""
    folder = Path(folder)
    candidates = [folder / scan.image.name] + [folder / f"{scan.name}{s}" for s in VOLUME_SUFFIXES]
    for path in candidates:
        if path.is_file():
            return path
    raise LeFusionError(f"{scan.image}: no organ mask for it in {folder} (looked for {scan.name} with {', '.join(VOLUME_SUFFIXES)})")
