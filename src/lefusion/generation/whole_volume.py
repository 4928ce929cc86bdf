"""`lefusion generate --method lesion-ddpm`: a whole synthetic FLAIR volume for every case's masks.

For every case of a dataset folder (its lesion mask and anatomy map define the condition; the image
is not read, except for its support when there is no organs/ folder) the model generates the whole
volume on its grid (`VolumeConfig.volume_shape`), which is resampled back to the case's brain box
and geometry and mapped to source units with the checkpoint's reference window; every voxel
outside the brain is the checkpoint's background value. Written as a plain-layout dataset:

    OUT/images/NAME_lesion-ddpm.nii.gz   float32 synthetic FLAIR, on the mask's grid and geometry
    OUT/masks/NAME_lesion-ddpm.nii.gz    the case's lesion mask, copied (uint8)
    OUT/organs/NAME_lesion-ddpm.nii.gz   the case's anatomy map, copied (when the input has organs/)
    OUT/manifest.json        settings + per output: sources, seed, brain box, sampler cost, seconds

Same conventions as `generation.pipeline`: everything is validated before anything is generated,
files are written under a temporary name and renamed, the manifest is rewritten after every batch
(an interrupted run resumes and skips finished outputs; other settings are refused), each output's
randomness comes from its own generator seeded by (seed, case name), so it depends neither on
batching, resuming nor sharding (`--shard K/N`: groups of `batch_size` consecutive cases).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data.volumes import ScanLabels, VolumeCase, brain_box, from_model_grid, from_unit, model_condition, read_labels, volume_cases
from ..device import resolve_device
from ..diffusion.lesion_ddpm import sample_volumes
from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import Ancestral, SamplerConfig
from ..errors import LeFusionError
from ..io import Volume, write_volume
from ..sharding import Shard, merge_shards, record_path, write_shard_record
from .manifest import MANIFEST, open_manifest, recorded_outputs
from .types import GenerateConfig, output_seed

METHOD = "lesion-ddpm"


def output_name(case: str) -> str:
    """The output stem of case `case`: CASE_lesion-ddpm."""
    return f"{case}_{METHOD}"


def check_lesion_ddpm(model: DiffusionModel | None) -> DiffusionModel:
    """The model, or a LeFusionError saying why it cannot run --method lesion-ddpm."""
    if model is None:
        raise LeFusionError("--checkpoint is required for --method lesion-ddpm")
    if model.kind != METHOD:
        raise LeFusionError(
            f"{model.source}: is a {model.kind} model; --method lesion-ddpm needs a checkpoint trained with --method lesion-ddpm"
        )
    return model


@dataclass
class _Prepared:
    case: VolumeCase
    name: str
    seed: int


def _settings(model: DiffusionModel, root: Path, sampler: SamplerConfig, seed: int) -> dict[str, Any]:
    return {
        "data": str(root),
        "method": METHOD,
        "checkpoint": str(model.source),
        "weights_sha256": model.weights_sha256,
        "sampler": sampler.canonical().to_dict(),
        "seed": seed,
        # how the grid maps to each scan (`data.volumes`): the brain box resampled trilinearly, each
        # label's indicator too (its fraction per grid voxel); recorded under the keys manifests use
        "interpolation": "linear",
        "mask_resampling": "fraction",
    }


def generate_case_volume(
    model: DiffusionModel, cases: list[VolumeCase], seeds: list[int], sampler: SamplerConfig, tick: Callable[[], None] | None = None
) -> list[tuple[np.ndarray, dict[str, Any], ScanLabels]]:
    """Generate the cases as one batch (seeds[i]: case i's generator) -> per case (synthetic volume
    (D, H, W) float32 on the case's grid in source units, its manifest record, its labels).
    tick() after every move of the sampler."""
    volume = model.config.volume
    labels = [read_labels(c, volume) for c in cases]
    boxes = [brain_box(lab.brain, lab.geometry.spacing, volume.margin_mm) for lab in labels]
    device = model.device
    cond = torch.stack([model_condition(lab, volume, box) for lab, box in zip(labels, boxes)]).to(device)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    start = time.perf_counter()
    x = sample_volumes(model.denoiser, model.schedule, cond, generators, sampler, (lambda _d, _n: tick()) if tick else None)
    seconds = (time.perf_counter() - start) / len(cases)
    results = []
    for i, (lab, box) in enumerate(zip(labels, boxes)):
        unit = from_model_grid(x[i, 0], box, -1.0)
        image = from_unit(unit, volume.reference)
        image[~lab.brain] = volume.background  # outside the brain: the background, exactly
        record = {"box": box.to_record(), "network_evaluations": sampler.network_evaluations(model.schedule.num_timesteps)}
        results.append((image, {**record, "seconds": round(seconds, 2)}, lab))
    return results


def generate_volumes(
    model: DiffusionModel,
    data_root: str | Path,
    out_dir: str | Path,
    config: GenerateConfig,
    progress: bool = True,
    shard: Shard | None = None,
) -> Path:
    """Generate a whole synthetic volume for every case of `data_root` into `out_dir` (module
    docstring); returns the manifest path (a shard's own until every shard has finished).
    config: seed, sampler (None: ancestral DDPM over all T steps), batch_size, device, max_cases."""
    model = check_lesion_ddpm(model)
    root, out = Path(data_root), Path(out_dir)
    sampler = config.sampler or Ancestral()
    if config.device != "auto" or model.device.type == "cpu":
        model = model.to(resolve_device(config.device))
    cases = volume_cases(root, need_image=False)[: config.max_cases]
    batch = max(1, config.batch_size)
    cases = [c for i, c in enumerate(cases) if shard is None or shard.takes(i // batch)]
    for case in cases:  # validate everything before writing anything
        read_labels(case, model.config.volume)
    # NAME_lesion-ddpm, as `generate` names every output (NAME_mix, NAME_copy-paste): a synthetic
    # volume never takes the name of the real scan, so an evaluation adds it beside the real one
    jobs = [_Prepared(c, output_name(c.name), output_seed(config.seed, c.name, METHOD)) for c in cases]
    manifest_path = out / MANIFEST
    own_path = record_path(manifest_path, shard)
    manifest = open_manifest(own_path, _settings(model, root, sampler, config.seed))
    manifest.pop("shard", None)
    done = manifest["outputs"]
    elsewhere = recorded_outputs(manifest_path, manifest["settings"], own_path)
    done.update({j.name: elsewhere[j.name] for j in jobs if j.name not in done and j.name in elsewhere})
    todo = [j for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())]
    header = {"method": METHOD, "volume": dict(model.config.to_dict()["volume"])}
    evaluations = sampler.network_evaluations(model.schedule.num_timesteps)
    if progress:
        part = f"shard {shard.index}/{shard.count}: " if shard is not None else ""
        print(
            f"{part}{len(jobs)} whole volume(s) ({METHOD}, {sampler.kind}, {evaluations} network evaluations each); "
            f"{len(jobs) - len(todo)} already done"
        )
    bar = tqdm(
        total=len(todo) * len(sampler.plan(model.schedule.num_timesteps)),
        desc=f"generate {len(todo)} volume(s)",
        unit="step",
        disable=not progress,
    )
    for start in range(0, len(todo), batch):
        group = todo[start : start + batch]
        results = generate_case_volume(model, [j.case for j in group], [j.seed for j in group], sampler, lambda: bar.update(1))
        for job, (image, record, labels) in zip(group, results):
            done[job.name] = _write(out, job, image, record, labels)
        write_shard_record(manifest_path, {**manifest, **header}, shard, complete=False)
    bar.close()
    write_shard_record(manifest_path, {**manifest, **header}, shard, complete=True)
    if shard is not None and merge_shards(manifest_path, strict=False) is not None and progress:
        print(f"every shard has finished: merged into {manifest_path}")
    return own_path


def _write(out: Path, job: _Prepared, image: np.ndarray, record: dict[str, Any], labels: ScanLabels) -> dict[str, Any]:
    """Write image, mask and organs of one output (each atomically) -> its manifest entry."""
    geometry = labels.geometry
    rel = {key: Path(key) / f"{job.name}.nii.gz" for key in ("images", "masks", "organs")}
    write_volume(Volume(image.astype(np.float32), geometry), out / rel["images"])
    mask = labels.mask_volume.array
    write_volume(
        Volume(mask if mask.max(initial=0) > 255 or mask.min(initial=0) < 0 else mask.astype(np.uint8), geometry), out / rel["masks"]
    )
    entry: dict[str, Any] = {"image": str(rel["images"]), "mask": str(rel["masks"])}
    if labels.organs_volume is not None:
        write_volume(Volume(np.rint(labels.organs_volume.array).astype(np.uint8), geometry), out / rel["organs"])
        entry["organs"] = str(rel["organs"])
    entry.update(
        {
            "method": METHOD,
            "source_image": str(job.case.image) if job.case.image else None,  # not read: the scan it stands in for
            "source_mask": str(job.case.mask),
            "source_organs": str(job.case.organs) if job.case.organs else None,
            "seed": job.seed,
            **record,
        }
    )
    return entry
