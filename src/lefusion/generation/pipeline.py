"""`lefusion generate`: lesions into normal scans, written as a dataset a user can open and train on.

For every case (an image plus a lesion mask) and every requested variant (a texture condition for
LeFusion): preprocess the ROI, let the generation method fill the lesion, put the ROI back into the
source volume in its own units and geometry, and write image + label (NIfTI), a preview PNG and a
manifest entry. All cases are validated before anything is generated; every file is written under
a temporary name and renamed when complete; the manifest is rewritten after each batch, so an
interrupted run resumes where it stopped and finished outputs are skipped.

The method is a strategy (`types.RoiGenerator`, built by `methods.build_method`): LeFusion's
background-preserving sampler (the default), Cond-Diffusion, or a non-learned baseline. Everything
else — cases, ROI conventions, naming, resume, atomic writing, previews, the manifest — is shared,
so every method meets the same data and leaves the same files.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.layouts import Case, find_cases
from ..data.roi import Roi, prepare_roi, restore_roi, to_source_dtype, validate_pair
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from ..io import Volume, read_volume, strip_volume_suffix, write_volume
from .diffusion_methods import LeFusionGenerator
from .manifest import MANIFEST, open_manifest, write_manifest
from .preview import case_preview
from .types import GenerateConfig, Generated, Job, RoiGenerator, output_seed


def generation_cases(root: Path) -> list[Case]:
    """Cases to put lesions into: the normal cases if the layout has them, else every case with a mask."""
    cases = find_cases(root)
    normal = [c for c in cases if c.role == "normal"]
    chosen = normal if normal else cases
    chosen = [c for c in chosen if c.mask is not None]
    if not chosen:
        raise LeFusionError(f"{root}: no case with a lesion mask to generate into")
    return chosen


def variant_tag(spec: str) -> str:
    """The file-name tag of a variant: preset2, mix, a histogram file's stem, a baseline's name."""
    return f"preset{spec}" if spec.isdigit() else ("mix" if spec == "mix" else Path(spec).stem)


def load_case(case: Case, generator: RoiGenerator) -> tuple[Volume, Volume, Roi]:
    """Read, validate and cut one case the way `generator` needs it; LeFusionError naming the file."""
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


def run_settings(generator: RoiGenerator, config: GenerateConfig, root: Path) -> dict:
    """What makes two runs' outputs differ: data, method settings (checkpoint, sampler, ...), presets, seed."""
    return {"data": str(root), **generator.settings(), "presets": list(config.presets), "seed": config.seed}


def generate_dataset(
    method: DiffusionModel | RoiGenerator, data_root: str | Path, out_dir: str | Path, config: GenerateConfig, progress: bool = True
) -> Path:
    """Generate into `out_dir` (images/, labels/, previews/, manifest.json). Returns the manifest path.

    method: a LeFusion model (sampled with `config.sampler`) or any RoiGenerator, e.g. from
    `lefusion.generation.methods.build_method`.
    """
    root, out = Path(data_root), Path(out_dir)
    generator = LeFusionGenerator(method, config) if isinstance(method, DiffusionModel) else method
    cases = generation_cases(root)[: config.max_cases]
    loaded = {c.name: load_case(c, generator) for c in cases}  # validate everything before writing anything
    variants = generator.variants(config)
    jobs = [
        Job(c, s, f"{strip_volume_suffix(c.image.name)}_{variant_tag(s)}", output_seed(config.seed, c.name, s))
        for c in cases
        for s in variants
    ]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise LeFusionError("two outputs would get the same name; give distinct --preset values")

    manifest_path = out / MANIFEST
    manifest = open_manifest(manifest_path, run_settings(generator, config, root))
    header = {**generator.header(), "method": generator.method, "conventions": _conventions_record(generator)}
    done = manifest["outputs"]
    todo = [j for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())]
    if progress:
        print(
            f"{len(jobs)} outputs ({len(cases)} cases x {len(variants)} variant(s), {generator.method}); {len(jobs) - len(todo)} already done"
        )
    batches = [todo[start : start + config.batch_size] for start in range(0, len(todo), config.batch_size)]
    bar = tqdm(
        total=sum(generator.steps(len(b)) for b in batches), desc=f"generate {len(todo)} lesion(s)", unit="step", disable=not progress
    )
    for batch in batches:
        t0 = time.perf_counter()
        results = generator(batch, [loaded[job.case.name][2] for job in batch], lambda: bar.update(1))
        seconds = (time.perf_counter() - t0) / len(batch)
        for job, result in zip(batch, results):
            done[job.name] = _write_output(out, job, loaded[job.case.name], result, generator, config, seconds)
        write_manifest(manifest_path, manifest, header)
    bar.close()
    write_manifest(manifest_path, manifest, header)
    return manifest_path


def _conventions_record(generator: RoiGenerator) -> dict:
    """JSON form of the ROI conventions, so evaluation can re-cut the outputs' ROIs the same way."""
    return dataclasses.asdict(generator.conventions)


def restored_volume(generator: RoiGenerator, roi: Roi, result: Generated, image: Volume, label: Volume, source: object) -> np.ndarray:
    """The generated ROI put back into the source volume, in its dtype; the voxels the method must
    not change are checked to be the source's, bit for bit."""
    restored = to_source_dtype(restore_roi(roi, result.roi, image), image.array)
    kept = _kept_voxels(generator, roi, label)
    if not np.array_equal(restored[kept], image.array[kept]):
        raise RuntimeError(f"internal error: background of {source} changed during generation ({generator.method})")
    return restored


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
    out: Path,
    job: Job,
    loaded: tuple[Volume, Volume, Roi],
    result: Generated,
    generator: RoiGenerator,
    config: GenerateConfig,
    seconds: float,
) -> dict:
    image, label, roi = loaded
    restored = restored_volume(generator, roi, result, image, label, job.case.image)
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
        case_preview(roi.image[0].numpy(), roi.label[0].numpy(), generated.numpy(), generator.conventions.lesion_labels, preview)
        entry["preview"] = str(preview.relative_to(out))
    return entry
