"""`lefusion masks sample`: DiffMask masks written as files a user can view and generate into."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import Ancestral, SamplerConfig
from ..errors import LeFusionError
from ..io import VOLUME_SUFFIXES, Geometry, Volume, atomic_target, read_volume, strip_volume_suffix, write_volume
from ..sharding import Shard, merge_shards, record_path, write_shard_record
from .diffmask import Threshold, attribute_conditions, model_box, model_control, sample_masks
from .placement import sample_masks_in_volume

MASKS_JSON = "masks.json"


def write_diffmask_dataset(
    model: DiffusionModel,
    out: str | Path,
    n: int,
    diameter_mm: float | Sequence[float],
    center_zyx: Sequence[float] | None = None,
    like: str | Path | None = None,
    boundary: str | Path | None = None,
    seed: int = 0,
    label: int = 1,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    threshold: Threshold = "size",
    sampler: SamplerConfig | None = None,
    attributes: dict[str, float] | None = None,
    guidance: float = 1.0,
    shard: Shard | None = None,
) -> Path:
    """Sample `n` masks and write them under `out`; returns the path of `out/masks.json`.

    Without `like`/`boundary` the masks are written on the model's 1 mm box (`masks/diffmask_*`).
    With `like` (a scan) they take its grid and the scan is copied beside each mask, so `out` is a
    plain dataset (images/NAME + masks/NAME) ready for ``lefusion generate --data out``. With
    `boundary` (a mask volume on the same grid, e.g. the lung) every lesion stays inside it; alone it
    also gives the grid. masks.json records the request, the model hash and each mask's seed and
    equivalent diameter. `threshold`: "size" (default: the requested volume) or a fixed level, see
    :func:`~lefusion.masks.diffmask.postprocess`; sampler: the reverse process (None: ancestral
    DDPM over all T steps); attributes / guidance: shape ratings 1..5 and the guidance scale for a
    DiffMask conditioned on them (:func:`~lefusion.masks.diffmask.sample_masks`), recorded in
    masks.json. Every file is written atomically. A re-run with the same request
    resumes: recorded samples whose files exist are kept. shard: only the batches of that shard
    (`lefusion.sharding`), recorded in masks.shard-K-of-N.json (returned), merged into masks.json
    when the last shard finishes; the shards' masks are the unsharded run's.
    """
    out = Path(out)
    sampler = (sampler or Ancestral()).canonical()
    attributes = {k: v for k, v in (attributes or {}).items() if v is not None}
    attribute_conditions(model, attributes, 1, guidance)  # a bad request fails before any file is written
    scan = read_volume(like) if like else None
    region = read_volume(boundary) if boundary else None
    if scan is not None and region is not None and (scan.shape != region.shape or not scan.geometry.matches(region.geometry)):
        raise LeFusionError(
            f"{boundary}: its grid {region.shape} does not match the scan {like} {scan.shape} (shape, spacing, origin, direction)"
        )
    inside = None
    if region is not None:
        inside = region.array > 0
        if not inside.any():
            raise LeFusionError(f"{boundary}: the boundary mask is empty")
    reference = scan or region
    if np.ndim(diameter_mm) != 0 and len(diameter_mm) != n:
        raise LeFusionError(f"diameter_mm: got {len(diameter_mm)} values for n={n} samples")
    diameters = [diameter_mm] * n if np.ndim(diameter_mm) == 0 else list(diameter_mm)
    if reference is None:
        reference = Volume(np.zeros(model_box(model), np.uint8), Geometry())

        def sample(lo: int, k: int, tick):
            return sample_masks(
                model,
                k,
                diameters[lo : lo + k],
                center_zyx,
                seed=seed + lo,
                batch_size=k,
                progress=tick,
                threshold=threshold,
                sampler=sampler,
                attributes=attributes,
                guidance=guidance,
            )
    else:

        def sample(lo: int, k: int, tick):
            return sample_masks_in_volume(
                model,
                reference,
                k,
                diameters[lo : lo + k],
                center_zyx,
                inside,
                seed + lo,
                k,
                tick,
                threshold,
                sampler,
                attributes,
                guidance,
            )

    source = Path(like) if like else None
    suffix = next((s for s in VOLUME_SUFFIXES if source is not None and source.name.lower().endswith(s)), ".nii.gz")
    stem = strip_volume_suffix(source.name) if source is not None else "diffmask"
    voxel_mm3 = float(np.prod(reference.geometry.spacing))
    evaluations = sampler.network_evaluations(model.schedule.num_timesteps)
    meta = {
        "checkpoint": str(model.source),
        "weights_sha256": model.weights_sha256,
        "n": n,
        "diameter_mm": diameter_mm if np.ndim(diameter_mm) == 0 else list(diameter_mm),
        "center_zyx": None if center_zyx is None else list(center_zyx),
        "like": str(like) if like else None,
        "boundary": str(boundary) if boundary else None,
        "seed": seed,
        "label": label,
        "threshold": threshold,
        "control": model_control(model),
        "attributes": attributes,
        "guidance": float(guidance),
        "sampler": sampler.to_dict(),
        "network_evaluations": evaluations,  # per mask
    }
    path = out / MASKS_JSON
    records = _recorded_samples(out, [path, record_path(path, shard)], meta, source is not None)
    # sample i is seeded seed + i and batches are always [b * batch_size, (b + 1) * batch_size), so a
    # batch (and its float rounding) is the same whatever the shard; shard K takes batches b % N == K
    batches = [(lo, min(batch_size, n - lo)) for lo in range(0, n, batch_size)]
    batches = [(lo, k) for b, (lo, k) in enumerate(batches) if shard is None or shard.takes(b)]
    ours = {f"masks/{stem}_{i:04d}{suffix}" for lo, k in batches for i in range(lo, lo + k)}
    records = {m: r for m, r in records.items() if m in ours}
    todo = [(lo, k) for lo, k in batches if any(f"masks/{stem}_{i:04d}{suffix}" not in records for i in range(lo, lo + k))]
    for j, (lo, k) in enumerate(todo):
        tick = None if progress is None else (lambda d, t, j=j: progress(j * t + d, len(todo) * t))
        for i, mask in enumerate(sample(lo, k, tick), start=lo):
            name = f"{stem}_{i:04d}{suffix}"
            write_volume(Volume(mask.astype(np.uint8) * np.uint8(label), reference.geometry), out / "masks" / name)
            if source is not None:  # the plain layout pairs images/NAME with masks/NAME
                (out / "images").mkdir(parents=True, exist_ok=True)
                with atomic_target(out / "images" / name, suffix) as tmp:
                    shutil.copyfile(source, tmp)
            volume = float(mask.sum()) * voxel_mm3
            records[f"masks/{name}"] = {
                "mask": f"masks/{name}",
                "seed": seed + i,
                "voxels": int(mask.sum()),
                "equivalent_diameter_mm": (6.0 * volume / np.pi) ** (1.0 / 3.0),
                "network_evaluations": evaluations,
            }
        write_shard_record(path, {**meta, "samples": sorted(records.values(), key=lambda r: r["seed"])}, shard, complete=False)
    own = write_shard_record(path, {**meta, "samples": sorted(records.values(), key=lambda r: r["seed"])}, shard, complete=True)
    if shard is not None:
        merge_shards(path, strict=False)
    return own


def _recorded_samples(out: Path, paths: list[Path], meta: dict, with_images: bool) -> dict[str, dict]:
    """Samples recorded under the same request in the files `paths` whose files are on disk, by mask path
    (a re-run resumes; a request that differs starts afresh)."""
    found: dict[str, dict] = {}
    for path in paths:
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if {k: v for k, v in previous.items() if k not in ("samples", "shard")} != json.loads(json.dumps(meta)):
            continue
        for sample in previous.get("samples", []):
            mask = out / sample["mask"]
            if mask.is_file() and (not with_images or (out / "images" / mask.name).is_file()):
                found[sample["mask"]] = sample
    return found
