"""`lefusion generate`: lesions into normal scans, written as a dataset a user can open and train on.

For every case (an image plus a lesion mask; an ROI or a whole scan of any size, spacing and
direction) and every requested variant (a texture condition for LeFusion): cut the ROI (one
centred ROI, or one box per lesion at the model's spacing: `cases`), let the generation method fill
the lesion, put the ROI back into the source volume in its own units and geometry (a whole scan:
at that lesion's voxels only), and write image + label (NIfTI), a preview PNG and a manifest entry. All cases are validated before anything is generated; every file is written under
a temporary name and renamed when complete; the manifest is rewritten after each batch, so an
interrupted run resumes where it stopped and finished outputs are skipped. `--shard K/N` runs
one share of the cases (`lefusion.sharding`); the N shards' outputs together are the unsharded run's.

The method is a strategy (`types.RoiGenerator`, built by `methods.build_method`): LeFusion's
background-preserving sampler (the default), Cond-Diffusion, or a non-learned baseline. Everything
else — cases, ROI conventions, naming, resume, atomic writing, previews, the manifest — is shared,
so every method meets the same data and leaves the same files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from ..data.layouts import Case, find_cases
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from ..io import strip_volume_suffix
from ..sharding import Shard, merge_shards, record_path, write_shard_record
from .cases import plan_case, read_case
from .diffusion_methods import LeFusionGenerator
from .manifest import MANIFEST, open_manifest, recorded_outputs
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


def cases_per_group(batch_size: int, n_variants: int) -> int:
    """How many consecutive cases make one batch group: as many as fill a batch with their outputs, at least one."""
    return max(1, batch_size // max(1, n_variants))


def generate_dataset(
    method: DiffusionModel | RoiGenerator,
    data_root: str | Path,
    out_dir: str | Path,
    config: GenerateConfig,
    progress: bool = True,
    shard: Shard | None = None,
    group_of: Callable[[Case], int] | None = None,
    cases: Sequence[Case] | None = None,
) -> Path:
    """Generate into `out_dir` (images/, labels/, previews/, manifest.json). Returns the manifest path
    (a shard's: manifest.shard-K-of-N.json, merged into manifest.json once every shard has finished).

    method: a LeFusion model (sampled with `config.sampler`) or any RoiGenerator, e.g. from
    `lefusion.generation.methods.build_method`. Outputs are generated in batch groups of whole
    cases (`group_of(case)`, default: `cases_per_group` consecutive cases of the sorted list); a
    group is generated whole, also when some of its outputs are done (they are not rewritten), so
    the batches, and with them the outputs, do not depend on sharding or resuming. shard: take
    only the groups of that shard (`lefusion.sharding`); cases: the cases to generate into
    (default `generation_cases(data_root)`; `augment` names its shard's own).
    """
    root, out = Path(data_root), Path(out_dir)
    generator = LeFusionGenerator(method, config) if isinstance(method, DiffusionModel) else method
    cases = list(generation_cases(root) if cases is None else cases)[: config.max_cases]
    variants = generator.variants(config)
    if group_of is None:
        position = {c.name: i // cases_per_group(config.batch_size, len(variants)) for i, c in enumerate(cases)}
        group_of = lambda case: position[case.name]  # noqa: E731
    cases = [c for c in cases if shard is None or shard.takes(group_of(c))]
    plans = {c.name: plan_case(c, generator) for c in cases}  # validate everything before writing anything
    jobs = [
        Job(c, s, f"{strip_volume_suffix(c.image.name)}_{variant_tag(s)}", output_seed(config.seed, c.name, s))
        for c in cases
        for s in variants
    ]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise LeFusionError("two outputs would get the same name; give distinct --preset values")

    manifest_path = out / MANIFEST
    own_path = record_path(manifest_path, shard)
    settings = run_settings(generator, config, root)
    manifest = open_manifest(own_path, settings)
    manifest.pop("shard", None)
    header = {**generator.header(), "method": generator.method, "conventions": dataclasses.asdict(generator.conventions)}
    done = manifest["outputs"]
    elsewhere = recorded_outputs(manifest_path, manifest["settings"], own_path)  # e.g. a merged or another shard's manifest
    done.update({j.name: elsewhere[j.name] for j in jobs if j.name not in done and j.name in elsewhere})
    todo = {j.name for j in jobs if not (j.name in done and (out / done[j.name]["image"]).is_file())}
    by_group: dict[int, list[Job]] = {}
    for job in jobs:
        by_group.setdefault(group_of(job.case), []).append(job)
    groups = [group for _, group in sorted(by_group.items()) if any(j.name in todo for j in group)]
    n_units = sum(len(plans[j.case.name].rounds) for j in jobs if j.name in todo)
    if progress:
        part = f"shard {shard.index}/{shard.count}: " if shard is not None else ""
        print(
            f"{part}{len(jobs)} outputs ({len(cases)} cases x {len(variants)} variant(s), {generator.method}); "
            f"{len(jobs) - len(todo)} already done; {n_units} lesion(s) to generate"
        )
    total = sum(
        generator.steps(len(batch)) for group in groups for batch in units([Shell(plans[j.case.name]) for j in group], config.batch_size)
    )
    bar = tqdm(total=total, desc=f"generate {n_units} lesion(s)", unit="step", disable=not progress)
    for group in groups:
        works = [start_work(job, plans[job.case.name], *read_case(job.case, generator), generator, config) for job in group]
        generate_works(works, generator, config.batch_size, lambda: bar.update(1))
        for work in works:
            if work.job.name in todo:  # a finished sibling was generated again only to keep the batches as they were
                done[work.job.name] = write_output(out, work, generator, config)
        write_shard_record(manifest_path, {**manifest, **header}, shard, complete=False)
    bar.close()
    write_shard_record(manifest_path, {**manifest, **header}, shard, complete=True)
    if shard is not None and merge_shards(manifest_path, strict=False) is not None and progress:
        print(f"every shard has finished: merged into {manifest_path}")
    return own_path
