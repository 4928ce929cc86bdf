"""`lefusion place`: lesion masks placed in a folder of whole scans, written as a plain dataset
that `lefusion generate` reads (images/NAME + masks/NAME) plus `lesions.json`.

images/ holds each scan unchanged (hard-linked when the file system allows, else copied; a DICOM
series is written as NIfTI), masks/ the NEW lesions only (label `label`), on the scan's grid:
existing lesions of a scan (its label map, when the scans come as a dataset) stay what they are,
they are only kept clear of. lesions.json records, per scan, the organ mask used, the number of
existing lesions and, per new lesion, where it is (voxels and world mm), its size and its shape's
source. A scan that cannot be served is reported by name and the others still run; re-running
with the same settings skips the scans already done.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.scans import Scan, find_scans, organ_mask_path
from ..errors import LeFusionError
from ..io import Volume, atomic_target, read_volume, write_volume
from ..sharding import Shard, merge_shards, record_path, write_shard_record
from .organs import lung_mask, read_organ_mask
from .placing import Placer, place_lesions
from .shapes import ShapeSource

LESIONS_JSON = "lesions.json"


@dataclass(frozen=True)
class PlaceConfig:
    """How many lesions per scan (uniform in [min, max]), their equivalent diameters (uniform in
    [min, max] mm), where (organ labels; margin in mm, None = no voxel touches the organ's edge;
    gap to other lesions in mm; juxtapleural: may touch the edge), the label id written, the seed."""

    lesions: tuple[int, int] = (1, 1)
    diameter_mm: tuple[float, float] = (8.0, 8.0)
    organ_labels: tuple[int, ...] | None = None
    margin_mm: float | None = None
    gap_mm: float = 3.0
    juxtapleural: bool = False
    label: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.lesions
        if not 0 <= lo <= hi:
            raise LeFusionError(f"--lesions: need 0 <= MIN <= MAX, got {lo}:{hi}")
        dlo, dhi = self.diameter_mm
        if not 0 < dlo <= dhi:
            raise LeFusionError(f"--diameter: need 0 < MIN <= MAX mm, got {dlo}:{dhi}")
        if self.gap_mm < 0 or (self.margin_mm is not None and self.margin_mm < 0):
            raise LeFusionError("--gap and --margin are distances in mm, >= 0")
        if not 0 < self.label < 256:
            raise LeFusionError(f"--label must be 1..255, got {self.label}")


def organ_mask(scan: Scan, image: Volume, organ_dir: Path | None, labels: tuple[int, ...] | None) -> tuple[np.ndarray, str]:
    """The organ (bool, the scan's grid) and a sentence on where it came from: the user's label map
    (`labels`; by default TotalSegmentator's five lung lobes when the file has them, otherwise every
    non-zero label) or, without one, the built-in lung mask."""
    if organ_dir is None:
        return lung_mask(image, name=str(scan.image)), "built-in lung mask (CT threshold and morphology, masks.organs)"
    path = organ_mask_path(organ_dir, scan)
    mask = read_organ_mask(path, labels, like=image)
    shown = list(labels) if labels else "lung lobes 10-14 if present, else every non-zero label"
    return mask, f"{path} labels {shown}"


def placed_image_name(scan: Scan) -> str:
    """The file name of a scan in images/ (a DICOM series becomes NAME.nii.gz)."""
    return f"{scan.name}.nii.gz" if scan.image.is_dir() else scan.image.name


def _copy_scan(scan: Scan, image: Volume, target_dir: Path) -> Path:
    """The scan in images/: the same file (hard link or copy), or NIfTI for a DICOM series."""
    if scan.image.is_dir():
        return write_volume(image, target_dir / placed_image_name(scan))
    target = target_dir / scan.image.name
    target_dir.mkdir(parents=True, exist_ok=True)
    with atomic_target(target, "".join(scan.image.suffixes)) as tmp:
        tmp.unlink()
        try:
            os.link(scan.image, tmp)
        except OSError:
            shutil.copyfile(scan.image, tmp)
    return target


def place_scan(scan: Scan, source: ShapeSource, config: PlaceConfig, organ_dir: Path | None, out: Path) -> dict[str, Any]:
    """Place the lesions of one scan and write its image and mask under `out`; its lesions.json entry."""
    image = read_volume(scan.image)
    organ, organ_note = organ_mask(scan, image, organ_dir, config.organ_labels)
    existing = None
    if scan.labels is not None:
        labels = read_volume(scan.labels)
        if labels.shape != image.shape:
            raise LeFusionError(f"{scan.labels}: label map shape {labels.shape} differs from the scan {image.shape}")
        existing = labels.array > 0
    rng = np.random.default_rng([config.seed, zlib.crc32(scan.name.encode())])
    n = int(rng.integers(config.lesions[0], config.lesions[1] + 1))
    diameters = rng.uniform(*config.diameter_mm, size=n)
    too_big = [d for d in diameters if d > source.max_diameter_mm()]
    if too_big:
        raise LeFusionError(
            f"{scan.image}: {max(too_big):.1f} mm is larger than the {source.name} shapes allow ({source.max_diameter_mm():.0f} mm)"
        )
    shapes = source.draw(list(diameters), [int(v) for v in rng.integers(0, 2**31, size=n)])
    placer = Placer(image, organ, existing, config.margin_mm, config.gap_mm, config.juxtapleural)
    placed = place_lesions(placer, shapes, list(diameters), rng, str(scan.image))
    mask = np.zeros(image.shape, dtype=np.uint8)
    for lesion in placed:
        mask[tuple(lesion.voxels.T)] = config.label
    image_path = _copy_scan(scan, image, out / "images")
    mask_path = write_volume(Volume(mask, image.geometry), out / "masks" / image_path.name)
    return {
        "source_image": str(scan.image),
        "source_labels": None if scan.labels is None else str(scan.labels),
        "image": str(image_path.relative_to(out)),
        "mask": str(mask_path.relative_to(out)),
        "organ": organ_note,
        "existing_lesions": int(_count(existing)),
        "lesions": [lesion.record(image.geometry, config.label) for lesion in placed],
    }


def _count(mask: np.ndarray | None) -> int:
    """Number of lesions (26-connected components) of a mask."""
    return 0 if mask is None or not mask.any() else int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])


def place_dataset(
    scans_dir: str | Path,
    out: str | Path,
    config: PlaceConfig,
    source: ShapeSource,
    source_record: dict[str, Any],
    organ_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    shard: Shard | None = None,
    scans_per_group: int = 1,
) -> tuple[Path, dict[str, str]]:
    """Place lesions in every scan of `scans_dir`; returns (lesions.json path, {scan: error} of the
    scans that could not be served). shard: only the scans of its groups (`scans_per_group`
    consecutive scans of the sorted list each; `lefusion.sharding`), recorded in its own
    lesions.shard-K-of-N.json. A scan's lesions depend on the seed and its name only."""
    out = Path(out)
    scans = find_scans(scans_dir)
    scans = [s for i, s in enumerate(scans) if shard is None or shard.takes(i // scans_per_group)]
    organ = Path(organ_dir) if organ_dir is not None else None
    settings = json.loads(
        json.dumps({"scans": str(scans_dir), "organ_masks": str(organ) if organ else None, **asdict(config), "shapes": source_record})
    )
    path = out / LESIONS_JSON
    record: dict[str, Any] = {"settings": settings, "scans": {}, "failed": {}}
    for previous_path in (path, record_path(path, shard)):  # a merged record, then the shard's own
        if previous_path.is_file():
            previous = json.loads(previous_path.read_text())
            if previous.get("settings") != settings:
                raise LeFusionError(f"{previous_path}: this folder was made with other placement settings; use a new --out")
            ours = {s.name for s in scans}
            record["scans"].update({k: v for k, v in previous.get("scans", {}).items() if k in ours and (out / v["mask"]).is_file()})
    failed: dict[str, str] = {}
    for scan in scans:
        if scan.name in record["scans"]:
            continue
        try:
            record["scans"][scan.name] = place_scan(scan, source, config, organ, out)
        except LeFusionError as exc:
            failed[scan.name] = " ".join(str(exc).split())
        if progress is not None:
            progress(scan.name)
        record["failed"] = failed
        write_shard_record(path, record, shard, complete=False)
    own = write_shard_record(path, {**record, "failed": failed}, shard, complete=True)
    if shard is not None:
        merge_shards(path, strict=False)
    return own, failed
