"""Writing one generated output: the volume and its label map (NIfTI, the source's geometry and
dtype), a preview PNG and the manifest entry, after checking that the voxels the method must not
change are the source's, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.grid import index_to_world
from ..data.roi import Roi
from ..io import Volume, write_volume
from .preview import lesions_preview
from .types import GenerateConfig, RoiGenerator
from .work import Work


def _kept_voxels(generator: RoiGenerator, work: Work) -> np.ndarray:
    """Bool mask (disk order, the source's shape) of the voxels the method must return unchanged:
    outside the lesion masks, except that a whole-volume ROI of a method that regenerates its ROI
    (Cond-Diffusion) may change every voxel inside the ROI box."""
    outside = ~np.isin(work.label.array, generator.conventions.lesion_labels)
    if generator.preserves_background or not work.plan.whole_volume:
        return outside
    roi: Roi = work.done[0][0]
    inside = np.zeros(roi.box.original_shape, dtype=bool)  # model (D, H, W) order
    inside[roi.box.slices()[0]] = True
    return ~inside.transpose(np.argsort(roi.axes))


def _lesion_records(work: Work) -> list[dict[str, Any]]:
    """Per lesion of a whole scan: where it is (scan voxels and world mm), its size, its box and round."""
    geometry, records = work.image.geometry, []
    voxel_mm3 = float(np.prod(geometry.spacing))
    for (_, region, result), round_ in zip(work.done, work.plan.rounds):
        lesion = region.lesion
        volume = len(lesion.voxels) * voxel_mm3
        records.append(
            {
                "lesion": lesion.index + 1,
                "labels": list(lesion.labels),
                "voxels": len(lesion.voxels),
                "centre_zyx": [round(float(v), 2) for v in lesion.centroid],
                "centre_mm_xyz": [round(float(v), 2) for v in index_to_world(geometry, lesion.centroid)],
                "volume_mm3": round(volume, 2),
                "equivalent_diameter_mm": round((6 * volume / np.pi) ** (1 / 3), 2),
                "round": round_,
                "box": region.box.to_record(),
                # original units <-> [-1, 1] of this lesion's ROI (CT window, MRI min-max or brain percentiles)
                "intensity_mapping": {
                    "modality": region.roi.mapping.modality,
                    "lo": round(region.roi.mapping.lo, 4),
                    "hi": round(region.roi.mapping.hi, 4),
                },
                "resampling": None if region.box.offset is not None else {"image": work.resampling[0], "mask": work.resampling[1]},
                **result.record,
            }
        )
    return records


def write_output(out: Path, work: Work, generator: RoiGenerator, config: GenerateConfig) -> dict[str, Any]:
    """Write `work` under `out` (images/, labels/, previews/) and return its manifest entry."""
    job, image, label = work.job, work.image, work.label
    kept = _kept_voxels(generator, work)
    if not np.array_equal(work.array[kept], image.array[kept]):
        raise RuntimeError(f"internal error: background of {job.case.image} changed during generation ({generator.method})")
    image_rel, label_rel = Path("images") / f"{job.name}.nii.gz", Path("labels") / f"{job.name}.nii.gz"
    write_volume(Volume(work.array, image.geometry), out / image_rel)
    labels = label.array if label.array.max() > 255 else label.array.astype(np.uint8)
    write_volume(Volume(labels, label.geometry), out / label_rel)
    records = [result.record for _, _, result in work.done]
    entry: dict[str, Any] = {
        "image": str(image_rel),
        "label": str(label_rel),
        "method": generator.method,
        "source_image": str(job.case.image),
        "source_mask": str(job.case.mask),
        "source_role": job.case.role,
        **{k: v for k, v in records[0].items() if k != "seconds"},
        "seed": job.seed,
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 2),
    }
    if not work.plan.whole_volume:
        # lesion 1's condition is also at the top level; every lesion's, with its place, in "lesions"
        entry["lesions"] = _lesion_records(work)
        if "network_evaluations" in entry:
            entry["network_evaluations"] = sum(r["network_evaluations"] for r in records)
        donors = {f"lesion{i + 1}/{k}": v for i, r in enumerate(records) for k, v in dict(r.get("donors") or {}).items()}
        if donors:  # every donor counts for the leakage check of `evaluate`
            entry["donors"] = donors
    if config.previews:
        preview = out / "previews" / f"{job.name}.png"
        rows = [(roi.image[0].numpy(), roi.label[0].numpy(), _roi_array(result.roi)) for roi, _, result in work.done]
        lesions_preview(rows, generator.conventions.lesion_labels, preview)
        entry["preview"] = str(preview.relative_to(out))
    return entry


def _roi_array(generated) -> np.ndarray:
    return (generated[0] if generated.ndim == 4 else generated).numpy()
