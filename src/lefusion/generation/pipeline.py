"""`lefusion generate`: lesions into normal scans, written as a dataset a user can open and train on.

For every case (an image plus a lesion mask) and every requested variant (a texture condition for
LeFusion): preprocess the ROI, let the generation method fill the lesion, put the ROI back into the
source volume in its own units and geometry, and write image + label (NIfTI), a preview PNG and a
manifest entry. All cases are validated before anything is generated; every file is written under
a temporary name and renamed when complete; the manifest is rewritten after each batch, so an
interrupted run resumes where it stopped and finished outputs are skipped.

The method is a strategy (`RoiGenerator`): LeFusion's background-preserving sampler
(`LeFusionGenerator`, the default) or a baseline (`lefusion.baselines`). Everything
else — cases, ROI conventions, naming, resume, atomic writing, previews, the manifest — is shared,
so every method meets the same data and leaves the same files.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

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
from ..training.run import DataConventions
from ..training.session import resolve_device
from .inpaint import require_lesion_model
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


@dataclass(frozen=True, eq=False)
class Generated:
    """One method output: roi (1, D, H, W) float32 in [-1, 1] on the ROI grid (the input ROI
    outside the lesion, unless the method's preserves_background is False), record:
    method-specific manifest fields (condition, donor, ...)."""

    roi: torch.Tensor
    record: dict[str, Any] = field(default_factory=dict)


Tick = Callable[[], None]


class RoiGenerator(Protocol):
    """A generation method as the pipeline sees it.

    method: its name in manifests; conventions: ROI preprocessing and lesion labels;
    preserves_background: True if every voxel outside the lesion masks comes back unchanged (the
    pipeline then checks that on every output), False for a method that regenerates the whole ROI
    (Cond-Diffusion; only the voxels outside the ROI box are then checked);
    label_hint: what to add to a label error (which labels the method expects and why);
    variants(config): the output variants per case (e.g. texture presets; their tags name files);
    settings(): what, besides the data and GenerateConfig, makes two runs' outputs differ (an output
    folder refuses to resume under other settings); header(): extra top-level manifest entries;
    steps(n): progress-bar units for a batch of n; __call__(jobs, rois, tick): one Generated per job,
    calling tick() once per progress unit. Outputs must depend on each job's seed only, never on
    which jobs share its batch.
    """

    method: str
    conventions: DataConventions
    label_hint: str
    preserves_background: bool

    def variants(self, config: GenerateConfig) -> tuple[str, ...]: ...
    def settings(self) -> dict[str, Any]: ...
    def header(self) -> dict[str, Any]: ...
    def steps(self, n: int) -> int: ...
    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]: ...


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


def condition_record(condition: Condition) -> dict[str, Any]:
    """Manifest fields of a histogram condition: spec, 1-based preset (None for a file), histogram."""
    return {"condition": condition.spec, "preset": condition.preset, "histogram": [round(v, 6) for v in condition.values]}


def conventions_record(conventions: DataConventions) -> dict[str, Any]:
    """JSON form of the ROI conventions, so evaluation can re-cut the outputs' ROIs the same way."""
    return dataclasses.asdict(conventions)


def model_conventions(model: LeFusionModel) -> DataConventions:
    """The ROI conventions a checkpoint was trained with: lesion labels, allowed labels, preprocessing."""
    cfg = model.config
    return DataConventions(cfg.lesion_labels, cfg.allowed_labels, cfg.preprocess)


@dataclass(frozen=True, eq=False)
class ConditionedBatch:
    """A batch ready for a histogram-conditioned sampler: per job its condition and its sampling
    generator; image, label (B, 1, D, H, W) and cond (B, 16*C) or None, on the sampling device."""

    conditions: list[Condition]
    generators: list[torch.Generator]
    image: torch.Tensor
    label: torch.Tensor
    cond: torch.Tensor | None


def conditioned_batch(model: LeFusionModel, jobs: Sequence[Job], rois: Sequence[Roi], device: torch.device) -> ConditionedBatch:
    """Each job's condition (a jittered preset or mix) comes from a CPU generator seeded by the job,
    its sampling noise from another on `device` with the same seed: outputs do not depend on batching."""
    cfg = model.config
    conditions = [
        choose_condition(job.spec, cfg.hist_presets, cfg.denoiser.cond_dim or 0, cfg.preprocess.hist_bins, torch.Generator().manual_seed(job.seed))
        for job in jobs
    ]
    generators = [torch.Generator(device=device).manual_seed(job.seed) for job in jobs]
    image = torch.stack([r.image for r in rois]).to(device)
    label = torch.stack([r.label for r in rois]).to(device)
    cond = torch.tensor([c.values for c in conditions], device=device) if cfg.denoiser.cond_dim else None
    return ConditionedBatch(conditions, generators, image, label, cond)


def _tag(spec: str) -> str:
    return f"preset{spec}" if spec.isdigit() else ("mix" if spec == "mix" else Path(spec).stem)


@dataclass
class LeFusionGenerator:
    """The default method: LeFusion's background-preserving sampler with histogram conditions."""

    model: LeFusionModel
    config: GenerateConfig
    method: ClassVar[str] = "lefusion"
    preserves_background: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require_lesion_model(self.model)
        self.device = resolve_device(self.config.device)
        self.model.to(self.device).eval()
        cfg = self.model.config
        self.conventions = model_conventions(self.model)
        self.label_hint = f"the checkpoint has {cfg.denoiser.channels} lesion channel(s) for label(s) {cfg.lesion_labels}"

    def variants(self, config: GenerateConfig) -> tuple[str, ...]:
        return tuple(str(s) for s in config.presets)

    def settings(self) -> dict[str, Any]:
        # exactly the keys of manifests written before baselines existed, so those folders still resume
        return {"checkpoint": str(self.model.source), "checkpoint_sha256": self.model.weights_sha256}

    def header(self) -> dict[str, Any]:
        model = self.model
        return {"model": {"source": str(model.source), "sha256": model.weights_sha256, "config": model.config.to_dict()}}

    def steps(self, n: int) -> int:
        # The bar counts sampler steps (a batch is one long loop), so it moves even for a single batch.
        return len(jump_schedule(self.model.schedule.num_timesteps, self.config.jump_length, self.config.jump_n_sample)) - 1

    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]:
        b = conditioned_batch(self.model, jobs, rois, self.device)
        result = inpaint_lesions(
            self.model.denoiser, self.model.schedule, b.image, b.label, self.model.config.lesion_labels, b.cond, b.generators,
            self.config.jump_length, self.config.jump_n_sample, progress=lambda done, total: tick(),
            mask_input=self.model.config.mask_input,
        ).cpu()
        return [Generated(result[i], condition_record(c)) for i, c in enumerate(b.conditions)]


def _load_case(case: Case, generator: RoiGenerator) -> tuple[Volume, Volume, Roi]:
    conv = generator.conventions
    image, label = read_volume(case.image), read_volume(case.mask)  # type: ignore[arg-type]
    try:
        validate_pair(image, label, conv.lesion_labels, conv.allowed_labels, case.image, case.mask, require_lesion=True)
    except LeFusionError as exc:
        if "label" not in str(exc):
            raise
        # a label problem is often the wrong checkpoint (or conventions) for this data: say what is expected
        raise LeFusionError(f"{exc} ({generator.label_hint})") from exc
    roi = prepare_roi(image, label, conv.preprocess, image_path=case.image, label_path=case.mask)
    if not torch.isin(roi.label, torch.tensor(conv.lesion_labels)).any():
        raise LeFusionError(f"{case.mask}: the lesion mask lies outside the centred {conv.preprocess.roi_shape} ROI")
    return image, label, roi


def _settings(generator: RoiGenerator, config: GenerateConfig, root: Path) -> dict:
    return {
        "data": str(root),
        **generator.settings(),
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in ("device", "batch_size", "previews", "max_cases")},
    }


def _read_manifest(path: Path, settings: dict) -> dict:
    if not path.is_file():
        return {"settings": settings, "outputs": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("settings") != json.loads(json.dumps(settings)):
        raise LeFusionError(f"{path}: this output folder was made with other settings (method, checkpoint, seed, presets or sampler); use a new --out")
    return manifest


def generate_dataset(
    method: LeFusionModel | RoiGenerator, data_root: str | Path, out_dir: str | Path, config: GenerateConfig, progress: bool = True
) -> Path:
    """Generate into `out_dir` (images/, labels/, previews/, manifest.json). Returns the manifest path.

    method: a LeFusionModel (the sampler, configured by `config`) or any RoiGenerator, e.g. a
    baseline from `lefusion.baselines`.
    """
    root, out = Path(data_root), Path(out_dir)
    generator = LeFusionGenerator(method, config) if isinstance(method, LeFusionModel) else method
    cases = generation_cases(root)[: config.max_cases]
    loaded = {c.name: _load_case(c, generator) for c in cases}  # validate everything before writing anything
    variants = generator.variants(config)
    jobs = [Job(c, s, f"{strip_volume_suffix(c.image.name)}_{_tag(s)}", job_seed(config.seed, c.name, s)) for c in cases for s in variants]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise LeFusionError("two outputs would get the same name; give distinct --preset values")

    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path, _settings(generator, config, root))
    header = {**generator.header(), "method": generator.method, "conventions": conventions_record(generator.conventions)}
    done = manifest["outputs"]
    todo = [j for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())]
    if progress:
        print(f"{len(jobs)} outputs ({len(cases)} cases x {len(variants)} variant(s), {generator.method}); {len(jobs) - len(todo)} already done")
    batches = [todo[start : start + config.batch_size] for start in range(0, len(todo), config.batch_size)]
    bar = tqdm(total=sum(generator.steps(len(b)) for b in batches), desc=f"generate {len(todo)} lesion(s)", unit="step", disable=not progress)
    for batch in batches:
        t0 = time.perf_counter()
        results = generator(batch, [loaded[job.case.name][2] for job in batch], lambda: bar.update(1))
        seconds = (time.perf_counter() - t0) / len(batch)
        for job, result in zip(batch, results):
            done[job.name] = _write_output(out, job, loaded[job.case.name], result, generator, config, seconds)
        atomic_write_text(manifest_path, json.dumps({**manifest, **header}, indent=2))
    bar.close()
    atomic_write_text(manifest_path, json.dumps({**manifest, **header}, indent=2))
    return manifest_path


def _kept_voxels(generator: RoiGenerator, roi: Roi, label: Volume) -> np.ndarray:
    """Bool mask (disk order, the source's shape) of the voxels a method must return unchanged: the
    background outside the lesion masks, or, for a method that regenerates the whole ROI, every
    voxel outside the ROI box (`restore_roi` writes only inside it)."""
    if generator.preserves_background:
        return ~np.isin(label.array, generator.conventions.lesion_labels)
    inside = np.zeros(roi.box.original_shape, dtype=bool)  # model (D, H, W) order
    inside[roi.box.slices()[0]] = True
    return ~inside.transpose(np.argsort(roi.axes))


def _write_output(
    out: Path, job: Job, loaded: tuple[Volume, Volume, Roi], result: Generated, generator: RoiGenerator, config: GenerateConfig, seconds: float
) -> dict:
    image, label, roi = loaded
    lesion_labels = generator.conventions.lesion_labels
    restored = to_source_dtype(restore_roi(roi, result.roi, image), image.array)
    kept = _kept_voxels(generator, roi, label)
    if not np.array_equal(restored[kept], image.array[kept]):
        raise RuntimeError(f"internal error: background of {job.case.image} changed during generation ({generator.method})")
    image_rel, label_rel = Path("images") / f"{job.name}.nii.gz", Path("labels") / f"{job.name}.nii.gz"
    write_volume(Volume(restored, image.geometry), out / image_rel)
    write_volume(Volume(label.array.astype(np.uint8), label.geometry), out / label_rel)
    entry = {
        "image": str(image_rel),
        "label": str(label_rel),
        "method": generator.method,
        "source_image": str(job.case.image),
        "source_mask": str(job.case.mask),
        "source_role": job.case.role,
        **result.record,
        "seed": job.seed,
        "seconds": round(seconds, 2),
    }
    if config.previews:
        preview = out / "previews" / f"{job.name}.png"
        generated = result.roi[0] if result.roi.ndim == 4 else result.roi
        case_preview(roi.image[0].numpy(), roi.label[0].numpy(), generated.numpy(), lesion_labels, preview)
        entry["preview"] = str(preview.relative_to(out))
    return entry
