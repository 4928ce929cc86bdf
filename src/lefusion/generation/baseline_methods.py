"""The baselines as `lefusion generate` methods (RoiGenerator strategies of the generation pipeline).

Baselines fill the same ROI the model would, in the model's [-1, 1] units, and go back to the
source volume through the same `restore_roi`. Working on the ROI rather than the source volume
keeps every method on equal terms: the same voxels change (mask voxels inside the ROI box), values
are clamped to the same intensity window, and intensities copied between scans are comparable (for
MRI, raw units differ from scan to scan; the per-volume min-max mapping makes them relative).

ROI conventions (preprocessing, lesion labels) come from a checkpoint when one is given — then a
baseline meets exactly the ROIs and texture presets LeFusion meets — else from the data's layout
(`lefusion.data.conventions.conventions_for`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..baselines.copy_paste import DonorLesion, copy_paste
from ..baselines.donors import donor_presets, load_donors
from ..baselines.handcrafted_texture import handcrafted_texture, histogram_moments
from ..baselines.types import Baseline
from ..control.conditions import choose_condition, parse_preset_spec
from ..data.conventions import DataConventions, conventions_for
from ..data.roi import Roi
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from .conditioning import condition_record
from .types import GenerateConfig, Generated, Job, Tick

BASELINES = ("copy-paste", "handcrafted")

# Per output: (the baseline with its parameters bound, manifest fields describing them). Binding may
# draw from the output's generator (e.g. a jittered condition) before the baseline itself does.
Binder = Callable[[Job, Roi, torch.Generator], tuple[Baseline, dict[str, Any]]]


@dataclass(frozen=True, eq=False)
class BaselineGenerator:
    """A non-learned method behind the pipeline's RoiGenerator interface.

    bind: per-output parameters (see Binder); variant_specs: fixed output variants per case, or
    None for one per `--preset` condition; presets: the texture presets `--preset K` refers to.
    """

    method: str
    conventions: DataConventions
    bind: Binder
    record: dict[str, Any]
    variant_specs: tuple[str, ...] | None = None
    presets: tuple[tuple[float, ...], ...] = ()
    preserves_background: ClassVar[bool] = True  # every baseline here changes mask voxels only

    @property
    def label_hint(self) -> str:
        return f"{self.method} uses lesion label(s) {self.conventions.lesion_labels}"

    def variants(self, config: GenerateConfig) -> tuple[str, ...]:
        if self.variant_specs is not None:
            return self.variant_specs
        specs = tuple(str(s) for s in config.presets)
        if not self.presets and any(isinstance(parse_preset_spec(s), int) or s == "mix" for s in specs):
            raise LeFusionError(
                f"{self.method}: no texture presets to draw '{' '.join(specs)}' from; give --checkpoint (its presets), "
                "--donors DIR (presets fitted to real lesions), --preset FILE.json or --texture MEAN STD"
            )
        return specs

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **self.record,
            "conventions": dataclasses.asdict(self.conventions),
            "texture_presets": [list(p) for p in self.presets],
        }

    def header(self) -> dict[str, Any]:
        return {}

    def steps(self, n: int) -> int:
        return n

    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]:
        results = []
        for job, roi in zip(jobs, rois):
            generator = torch.Generator().manual_seed(job.seed)  # one stream per output: batching cannot change it
            baseline, record = self.bind(job, roi, generator)
            out = baseline(roi.image[0].numpy(), roi.label[0].numpy(), self.conventions.lesion_labels, generator)
            results.append(Generated(torch.from_numpy(out.image)[None], {**record, **out.record}))
            tick()
        return results


def copy_paste_generator(donors: list[DonorLesion], conventions: DataConventions, donor_root: str | Path) -> BaselineGenerator:
    """Copy-Paste: one output per case, each lesion class from a seeded random donor (never the
    target scan itself, so a lesion generated on a real pathological mask is not its own copy)."""
    resolved = {d.source: Path(d.source).resolve() for d in donors}

    def bind(job: Job, roi: Roi, generator: torch.Generator) -> tuple[Baseline, dict[str, Any]]:
        target = job.case.image.resolve()
        eligible = [d for d in donors if resolved[d.source] != target]
        return functools.partial(copy_paste, donors=eligible), {}

    record = {"donors": str(donor_root), "donor_lesions": len(donors)}
    return BaselineGenerator("copy-paste", conventions, bind, record, variant_specs=("copy-paste",))


def _texture_in_roi(texture: Sequence[tuple[float, float]], roi: Roi) -> tuple[list[float], list[float]]:
    """(means, stds) from source units (HU for CT) into this ROI's [-1, 1] units."""
    mapping = roi.mapping
    scale = 2.0 / (mapping.hi - mapping.lo)
    return [float(mapping.forward(np.array(m))) for m, _ in texture], [s * scale for _, s in texture]


def _histogram_targets(values: Sequence[float], n_classes: int) -> tuple[list[float], list[float]]:
    """Per-class (means, stds) of a concatenated condition; a class the histogram leaves empty
    (e.g. EMIDEC presets without PMO) takes the moments of all classes' mass together."""
    hists = np.asarray(values, dtype=np.float64).reshape(n_classes, -1)
    pooled = histogram_moments(hists.sum(axis=0))
    if pooled is None:
        raise LeFusionError("the texture histogram is all zeros; give another --preset or --texture MEAN STD")
    moments = [histogram_moments(h) or pooled for h in hists]
    return [m for m, _ in moments], [s for _, s in moments]


def handcrafted_generator(
    conventions: DataConventions,
    presets: Sequence[tuple[float, ...]] = (),
    texture: Sequence[tuple[float, float]] | None = None,
    smoothing: float = 1.0,
) -> BaselineGenerator:
    """Hand-Crafted texture. Targets: `texture` = one (mean, std) in source units (HU for CT) for
    every lesion class or one per class, one output per case; or else the moments of the `--preset`
    condition (jittered as for LeFusion), one output per condition."""
    n_classes = len(conventions.lesion_labels)
    bins = conventions.preprocess.hist_bins
    if texture is not None:
        texture = [(float(m), float(s)) for m, s in texture]
        if len(texture) == 1:
            texture = texture * n_classes
        if len(texture) != n_classes or any(s < 0 for _, s in texture):
            raise LeFusionError(
                f"--texture needs one MEAN STD pair (std >= 0) for all lesion classes or one per class {conventions.lesion_labels}"
            )
    if smoothing < 0:
        raise LeFusionError(f"--smoothing must be >= 0 voxels, got {smoothing}")

    def bind(job: Job, roi: Roi, generator: torch.Generator) -> tuple[Baseline, dict[str, Any]]:
        if texture is not None:
            means, stds = _texture_in_roi(texture, roi)
            record: dict[str, Any] = {"texture_source_units": [list(t) for t in texture]}
        else:
            condition = choose_condition(job.spec, tuple(presets), n_classes * bins, bins, generator)
            means, stds = _histogram_targets(condition.values, n_classes)
            record = condition_record(condition)
        return functools.partial(handcrafted_texture, means=means, stds=stds, sigma=smoothing), record

    record = {"texture": None if texture is None else [list(t) for t in texture], "smoothing_voxels": smoothing}
    variants = ("handcrafted",) if texture is not None else None
    return BaselineGenerator("handcrafted", conventions, bind, record, variant_specs=variants, presets=tuple(tuple(p) for p in presets))


def make_baseline(
    method: str,
    data_root: str | Path,
    *,
    model: DiffusionModel | None = None,
    donors: str | Path | None = None,
    texture: Sequence[tuple[float, float]] | None = None,
    smoothing: float = 1.0,
    presets_k: int = 3,
) -> BaselineGenerator:
    """Build a baseline method for `generate_dataset` (the CLI's `--method`, see module docstring).

    model: optional checkpoint whose ROI conventions and presets to use; donors: dataset root whose
    pathological training cases are the real lesions (required by copy-paste; for handcrafted
    without a checkpoint, the source of `presets_k` fitted presets).
    """
    conventions = DataConventions.of_model(model.config) if model is not None else conventions_for(Path(data_root))
    if method == "copy-paste":
        if donors is None:
            raise LeFusionError("--method copy-paste needs --donors DIR, a dataset with real pathological cases to copy lesions from")
        return copy_paste_generator(load_donors(donors, conventions), conventions, donors)
    if method == "handcrafted":
        if model is not None:
            presets: list[tuple[float, ...]] = list(model.config.hist_presets)
        elif donors is not None and texture is None:
            presets = donor_presets(load_donors(donors, conventions), conventions, presets_k)
        else:
            presets = []
        return handcrafted_generator(conventions, presets, texture, smoothing)
    raise LeFusionError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
