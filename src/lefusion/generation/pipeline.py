"""`lefusion generate`: lesions into normal scans, written as a dataset a user can open and train on.

For every case (an image plus a lesion mask) and every requested texture condition: preprocess the
ROI, inpaint with the background-preserving sampler, put the ROI back into the source volume in its
own units and geometry, and write image + label (NIfTI), a preview PNG and a manifest entry.
All cases are validated before anything is generated; every file is written under a temporary name
and renamed when complete; the manifest is rewritten after each batch, so an interrupted run
resumes where it stopped and finished outputs are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..control.conditions import Condition, choose_condition
from ..data.layouts import Case, find_cases
from ..data.roi import Roi, prepare_roi, restore_roi, to_source_dtype, validate_pair
from ..diffusion.repaint import inpaint_lesions
from ..diffusion.time_travel import jump_schedule
from ..errors import LeFusionError
from ..io import Volume, atomic_write_text, read_volume, strip_volume_suffix, write_volume
from ..model import LeFusionModel
from .preview import case_preview

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GenerateConfig:
    """Sampler and output settings. Published defaults: jump length 10, 10 repeats (2,910 steps)."""

    presets: tuple[str, ...] = ("mix",)
    seed: int = 0
    jump_length: int = 10
    jump_n_sample: int = 10
    batch_size: int = 4
    device: str = "auto"
    previews: bool = True
    max_cases: int | None = None


@dataclass(frozen=True)
class Job:
    case: Case
    spec: str
    name: str
    seed: int


def job_seed(seed: int, case_name: str, spec: str) -> int:
    """A per-output seed from the run seed and the output's identity (independent of batching)."""
    return (seed * 2_654_435_761 + zlib.crc32(f"{case_name}|{spec}".encode())) % (2**63)


def generation_cases(root: Path) -> list[Case]:
    """Cases to put lesions into: the normal cases if the layout has them, else every case with a mask."""
    cases = find_cases(root)
    normal = [c for c in cases if c.role == "normal"]
    chosen = normal if normal else cases
    chosen = [c for c in chosen if c.mask is not None]
    if not chosen:
        raise LeFusionError(f"{root}: no case with a lesion mask to generate into")
    return chosen


def _tag(spec: str) -> str:
    return f"preset{spec}" if spec.isdigit() else ("mix" if spec == "mix" else Path(spec).stem)


def _load_case(case: Case, model: LeFusionModel) -> tuple[Volume, Volume, Roi]:
    cfg = model.config
    image, label = read_volume(case.image), read_volume(case.mask)  # type: ignore[arg-type]
    try:
        validate_pair(image, label, cfg.lesion_labels, cfg.allowed_labels, case.image, case.mask, require_lesion=True)
    except LeFusionError as exc:
        if "label" not in str(exc):
            raise
        # a label problem is often the wrong checkpoint for this data: say what the model expects
        raise LeFusionError(
            f"{exc} (the checkpoint has {cfg.denoiser.channels} lesion channel(s) for label(s) {cfg.lesion_labels})"
        ) from exc
    roi = prepare_roi(image, label, cfg.preprocess, image_path=case.image, label_path=case.mask)
    if not torch.isin(roi.label, torch.tensor(cfg.lesion_labels)).any():
        raise LeFusionError(f"{case.mask}: the lesion mask lies outside the centred {cfg.preprocess.roi_shape} ROI")
    return image, label, roi


def _settings(model: LeFusionModel, config: GenerateConfig, root: Path) -> dict:
    return {
        "data": str(root),
        "checkpoint": str(model.source),
        "checkpoint_sha256": model.weights_sha256,
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in ("device", "batch_size", "previews", "max_cases")},
    }


def _read_manifest(path: Path, settings: dict) -> dict:
    if not path.is_file():
        return {"settings": settings, "outputs": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("settings") != json.loads(json.dumps(settings)):
        raise LeFusionError(f"{path}: this output folder was made with other settings (checkpoint, seed, presets or sampler); use a new --out")
    return manifest


def generate_dataset(model: LeFusionModel, data_root: str | Path, out_dir: str | Path, config: GenerateConfig, progress: bool = True) -> Path:
    """Generate into `out_dir` (images/, labels/, previews/, manifest.json). Returns the manifest path."""
    root, out = Path(data_root), Path(out_dir)
    cfg = model.config
    if cfg.denoiser.extra_in_channels:
        raise LeFusionError(f"{model.source}: is a mask model (DiffMask), not a lesion model; use `lefusion masks sample`")
    cases = generation_cases(root)[: config.max_cases]
    loaded = {c.name: _load_case(c, model) for c in cases}  # validate everything before writing anything
    jobs = [Job(c, str(s), f"{strip_volume_suffix(c.image.name)}_{_tag(str(s))}", job_seed(config.seed, c.name, str(s))) for c in cases for s in config.presets]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise LeFusionError("two outputs would get the same name; give distinct --preset values")

    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else ("cpu" if config.device == "auto" else config.device))
    model.to(device).eval()
    manifest_path = out / MANIFEST
    settings = _settings(model, config, root)
    manifest = _read_manifest(manifest_path, settings)
    done = manifest["outputs"]
    todo = [j for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())]
    if progress:
        print(f"{len(jobs)} outputs ({len(cases)} cases x {len(config.presets)} condition(s)); {len(jobs) - len(todo)} already done")
    # The bar counts sampler steps (a batch is one long loop), so it moves even for a single batch.
    n_steps = len(jump_schedule(model.schedule.num_timesteps, config.jump_length, config.jump_n_sample)) - 1
    n_batches = -(-len(todo) // config.batch_size)
    bar = tqdm(total=n_batches * n_steps, desc=f"generate {len(todo)} lesion(s)", unit="step", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        t0 = time.perf_counter()
        conditions: list[Condition] = []
        generators = []
        for job in batch:
            gen = torch.Generator(device=device).manual_seed(job.seed)
            cond_gen = torch.Generator().manual_seed(job.seed)
            conditions.append(choose_condition(job.spec, cfg.hist_presets, cfg.denoiser.cond_dim or 0, cfg.preprocess.hist_bins, cond_gen))
            generators.append(gen)
        rois = [loaded[job.case.name][2] for job in batch]
        image = torch.stack([r.image for r in rois]).to(device)
        label = torch.stack([r.label for r in rois]).to(device)
        cond = torch.tensor([c.values for c in conditions], device=device) if cfg.denoiser.cond_dim else None
        result = inpaint_lesions(
            model.denoiser, model.schedule, image, label, cfg.lesion_labels, cond, generators, config.jump_length, config.jump_n_sample,
            progress=lambda done, total: bar.update(1),
        ).cpu()
        seconds = (time.perf_counter() - t0) / len(batch)
        for i, job in enumerate(batch):
            done[job.name] = _write_output(out, job, loaded[job.case.name], result[i], conditions[i], model, config, seconds)
        atomic_write_text(manifest_path, json.dumps({**manifest, "model": _model_record(model)}, indent=2))
    bar.close()
    atomic_write_text(manifest_path, json.dumps({**manifest, "model": _model_record(model)}, indent=2))
    return manifest_path


def _model_record(model: LeFusionModel) -> dict:
    return {"source": str(model.source), "sha256": model.weights_sha256, "config": model.config.to_dict()}


def _write_output(out: Path, job: Job, loaded: tuple[Volume, Volume, Roi], generated: torch.Tensor, condition: Condition, model: LeFusionModel, config: GenerateConfig, seconds: float) -> dict:
    image, label, roi = loaded
    lesion_labels = model.config.lesion_labels
    restored = to_source_dtype(restore_roi(roi, generated, image), image.array)
    background = ~np.isin(label.array, lesion_labels)
    if not np.array_equal(restored[background], image.array[background]):
        raise RuntimeError(f"internal error: background of {job.case.image} changed during generation")
    image_rel, label_rel = Path("images") / f"{job.name}.nii.gz", Path("labels") / f"{job.name}.nii.gz"
    write_volume(Volume(restored, image.geometry), out / image_rel)
    write_volume(Volume(label.array.astype(np.uint8), label.geometry), out / label_rel)
    entry = {
        "image": str(image_rel),
        "label": str(label_rel),
        "source_image": str(job.case.image),
        "source_mask": str(job.case.mask),
        "condition": condition.spec,
        "preset": condition.preset,
        "histogram": [round(v, 6) for v in condition.values],
        "seed": job.seed,
        "seconds": round(seconds, 2),
    }
    if config.previews:
        preview = out / "previews" / f"{job.name}.png"
        case_preview(roi.image[0].numpy(), roi.label[0].numpy(), generated[0].numpy(), lesion_labels, preview)
        entry["preview"] = str(preview.relative_to(out))
    return entry
