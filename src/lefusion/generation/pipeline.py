"""`lefusion generate`: lesions into normal scans, written as a dataset a user can open and train on.

For every case (an image plus a lesion mask; an ROI or a whole scan of any size, spacing and
direction) and every requested variant (a texture condition for LeFusion): cut the ROI (one
centred ROI, or one box per lesion at the model's spacing: `cases`), let the generation method fill
the lesion, put the ROI back into the source volume in its own units and geometry (a whole scan:
at that lesion's voxels only), and write image + label (NIfTI), a preview PNG and a manifest entry. All cases are validated before anything is generated; every file is written under
a temporary name and renamed when complete; the manifest is rewritten after each batch, so an
interrupted run resumes where it stopped and finished outputs are skipped.

The method is a strategy (`types.RoiGenerator`, built by `methods.build_method`): LeFusion's
background-preserving sampler (the default), Cond-Diffusion, or a non-learned baseline. Everything
else — cases, ROI conventions, naming, resume, atomic writing, previews, the manifest — is shared,
so every method meets the same data and leaves the same files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from ..data.layouts import Case, find_cases
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from ..io import strip_volume_suffix
from .cases import plan_case, read_case
from .diffusion_methods import LeFusionGenerator
from .manifest import MANIFEST, open_manifest, write_manifest
from .outputs import write_output
from .types import GenerateConfig, Job, RoiGenerator, output_seed
from .work import Shell, generate_works, start_work, units


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


def run_settings(generator: RoiGenerator, config: GenerateConfig, root: Path) -> dict:
    """What makes two runs' outputs differ: data, method settings (checkpoint, sampler, ...), presets, seed."""
    resampling = {"interpolation": config.interpolation, "mask_resampling": config.mask_resampling}
    texture = {} if config.texture_class is None else {"texture_class": config.texture_class}
    return {"data": str(root), **generator.settings(), "presets": list(config.presets), **texture, "seed": config.seed, **resampling}


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
    plans = {c.name: plan_case(c, generator) for c in cases}  # validate everything before writing anything
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
    header = {**generator.header(), "method": generator.method, "conventions": dataclasses.asdict(generator.conventions)}
    done = manifest["outputs"]
    todo = [j for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())]
    n_units = sum(len(plans[j.case.name].rounds) for j in todo)
    if progress:
        print(
            f"{len(jobs)} outputs ({len(cases)} cases x {len(variants)} variant(s), {generator.method}); "
            f"{len(jobs) - len(todo)} already done; {n_units} lesion(s) to generate"
        )
    groups = [todo[start : start + config.batch_size] for start in range(0, len(todo), config.batch_size)]
    total = sum(
        generator.steps(len(batch)) for group in groups for batch in units([Shell(plans[j.case.name]) for j in group], config.batch_size)
    )
    bar = tqdm(total=total, desc=f"generate {n_units} lesion(s)", unit="step", disable=not progress)
    for group in groups:
        works = [start_work(job, plans[job.case.name], *read_case(job.case, generator), generator, config) for job in group]
        generate_works(works, generator, config.batch_size, lambda: bar.update(1))
        for work in works:
            done[work.job.name] = write_output(out, work, generator, config)
        write_manifest(manifest_path, manifest, header)
    bar.close()
    write_manifest(manifest_path, manifest, header)
    return manifest_path
