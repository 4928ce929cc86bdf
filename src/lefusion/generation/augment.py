"""`lefusion augment`: whole scans in, an augmented training set out (place + generate + assemble).

1. place: lesion masks inside the organ of every scan (`masks.place_dataset`), in OUT/work/placed;
2. generate: the lesions into the scans, one box per lesion (`pipeline.generate_dataset`), in
   OUT/work/generated; every check that can fail (room, presets, shapes, geometry) has run before
   its progress bar starts;
3. assemble: OUT/images/NAME.nii.gz (the augmented scan, named after the input scan; NAME_TAG for
   several variants), OUT/labels/NAME.nii.gz (the full label map: the scan's existing lesion
   labels kept, the new lesions added), OUT/previews/NAME.png (`scan_preview`) and
   OUT/manifest.json: per output every new lesion's placement (centre, size, shape source) and
   generation (ROI box in scan voxels, resampling, histogram, sampler, seed).

Every step resumes: re-running the same command skips what is done.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.layouts import Case
from ..data.regions import find_lesions
from ..data.scans import find_scans
from ..errors import LeFusionError
from ..io import Volume, read_volume, strip_volume_suffix, write_volume
from ..masks.place_dataset import PlaceConfig, place_dataset, placed_image_name
from ..masks.shapes import ShapeSource
from ..sharding import Shard, merge_folder, record_path, write_shard_record
from .pipeline import cases_per_group, generate_dataset, run_settings
from .scan_preview import LUNG_WINDOW, scan_preview
from .types import GenerateConfig, RoiGenerator

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AugmentConfig:
    """Placement, generation (presets, seed, sampler, resampling, batch size) and organ masks."""

    place: PlaceConfig = field(default_factory=PlaceConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    organ_masks: Path | None = None
    previews: bool = True


@dataclass(frozen=True)
class AugmentResult:
    manifest: Path
    outputs: int
    lesions: int
    failed: dict[str, str]


def _match(placed: list[dict], generated: list[dict]) -> list[dict]:
    """Each generated lesion record merged with the placement record of the same lesion (nearest centre)."""
    merged = []
    for gen in generated:
        centre = np.asarray(gen["centre_zyx"])
        place = min(placed, key=lambda p: float(np.linalg.norm(np.asarray(p["centre_zyx"]) - centre)))
        merged.append(
            {
                "placement": place,
                **{k: v for k, v in gen.items() if k not in ("centre_zyx", "centre_mm_xyz")},
                "centre_zyx": gen["centre_zyx"],
                "centre_mm_xyz": gen["centre_mm_xyz"],
            }
        )
    return merged


def _assemble(out: Path, name: str, entry: dict, placement: dict, generated_dir: Path, config: AugmentConfig, window) -> dict[str, Any]:
    image = read_volume(generated_dir / entry["image"])
    new = read_volume(generated_dir / entry["label"]).array > 0
    labels = np.zeros(image.shape, dtype=np.uint8)
    if placement.get("source_labels"):
        existing = read_volume(placement["source_labels"]).array
        labels = existing.astype(np.uint8) if existing.max() <= 255 else existing.copy()
    labels[new] = config.place.label
    image_path = write_volume(image, out / "images" / f"{name}.nii.gz")
    label_path = write_volume(Volume(labels, image.geometry), out / "labels" / f"{name}.nii.gz")
    record = {
        "image": str(image_path.relative_to(out)),
        "label": str(label_path.relative_to(out)),
        "source_image": placement["source_image"],
        "source_labels": placement.get("source_labels"),
        "organ": placement["organ"],
        "existing_lesions": placement["existing_lesions"],
        "method": entry["method"],
        "condition": entry.get("condition"),
        "seed": entry["seed"],
        "network_evaluations": entry.get("network_evaluations"),
        "seconds": entry.get("seconds"),
        "lesions": _match(placement["lesions"], entry.get("lesions", [])),
    }
    if config.previews:
        before = read_volume(generated_dir.parent / "placed" / placement["image"]).array
        lesions = [lesion.voxels for lesion in find_lesions(new.astype(np.uint8), (1,))]
        preview = scan_preview(before, image.array, lesions, image.geometry, out / "previews" / f"{name}.png", window)
        record["preview"] = str(preview.relative_to(out))
    return record


def augment_scans(
    scans_dir: str | Path,
    out: str | Path,
    method: RoiGenerator,
    shapes: ShapeSource,
    shapes_record: dict[str, Any],
    config: AugmentConfig,
    progress: bool = True,
    shard: Shard | None = None,
) -> AugmentResult:
    """Run the job (module docstring); scans that could not be served are in `failed`, by name.
    shard: this process's share of the scans (`lefusion.sharding`): placement, generation and
    assembly of its scans only, each step recorded in its own shard file, merged when the last
    shard finishes; the nnU-Net export is left to the merge (`lefusion manifest merge`)."""
    out = Path(out)
    placed_dir, generated_dir = out / "work" / "placed", out / "work" / "generated"
    say = (lambda name: print(f"placed lesions in {name}", flush=True)) if progress else None
    per_group = cases_per_group(config.generate.batch_size, len(method.variants(config.generate)))
    lesions_json, failed = place_dataset(
        scans_dir, placed_dir, config.place, shapes, shapes_record, config.organ_masks, say, shard, per_group
    )
    placements = json.loads(lesions_json.read_text())["scans"]
    if not placements and (failed or shard is None):
        raise LeFusionError(f"{scans_dir}: no scan could be given lesions: " + "; ".join(failed.values()))
    # batch groups by position in the sorted scan list, also for scans that failed, so that the
    # batches (and the outputs) are the same whatever the shard
    group = {placed_image_name(s): i // per_group for i, s in enumerate(find_scans(scans_dir))}
    cases = [
        Case(strip_volume_suffix(Path(v["image"]).name), placed_dir / v["image"], placed_dir / v["mask"])
        for _, v in sorted(placements.items())
    ]
    generated_path = generate_dataset(
        method, placed_dir, generated_dir, config.generate, progress, shard, lambda case: group[case.image.name], cases
    )
    generated = json.loads(generated_path.read_text())
    settings = json.loads(
        json.dumps(
            {
                "scans": str(scans_dir),
                "place": asdict(config.place),
                "organ_masks": str(config.organ_masks),
                "generate": run_settings(method, config.generate, placed_dir),
            },
            default=str,
        )
    )
    path = out / MANIFEST
    manifest: dict[str, Any] = {"settings": settings, "outputs": {}}
    variants = len(config.generate.presets)
    by_scan = {Path(v["image"]).name: k for k, v in placements.items()}
    names = {g: by_scan[Path(e["source_image"]).name] if variants == 1 else g for g, e in generated["outputs"].items()}
    for previous_path in (path, record_path(path, shard)):  # a merged manifest, then the shard's own
        if previous_path.is_file():
            previous = json.loads(previous_path.read_text())
            if previous.get("settings") != settings:
                raise LeFusionError(f"{previous_path}: this folder was made with other settings; use a new --out")
            kept = {k: v for k, v in previous["outputs"].items() if (out / v["image"]).is_file()}
            manifest["outputs"].update(kept if shard is None else {k: v for k, v in kept.items() if k in names.values()})
    preprocess = method.conventions.preprocess
    window = LUNG_WINDOW if preprocess.modality == "ct" else None
    n_lesions = 0
    for gen_name, entry in sorted(generated["outputs"].items()):
        scan, name = by_scan[Path(entry["source_image"]).name], names[gen_name]
        if name not in manifest["outputs"]:
            manifest["outputs"][name] = _assemble(out, name, entry, placements[scan], generated_dir, config, window)
            write_shard_record(path, {**manifest, "failed": failed}, shard, complete=False)
        n_lesions += len(manifest["outputs"][name]["lesions"])
    header = {k: v for k, v in generated.items() if k not in ("outputs", "settings", "shard")}
    own = write_shard_record(path, {**manifest, "failed": failed, "header": header}, shard, complete=True)
    if shard is not None and path in merge_folder(out, strict=False) and progress:
        print(f"every shard has finished: merged into {path}")
    return AugmentResult(own, len(manifest["outputs"]), n_lesions, failed)
