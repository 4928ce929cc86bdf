"""Outputs in progress: the units of work of each (one centred ROI, or one box per lesion), cut
from the output as it is, generated in batches round by round, and pasted back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.regions import ImageInterpolation, Lesion, MaskResampling, Region, cut_region, find_lesions, paste_region, scan_mapping
from ..data.roi import IntensityMapping, Roi, prepare_roi, restore_roi, to_source_dtype
from ..io import Volume
from .cases import CasePlan, lesion_seed
from .types import GenerateConfig, Generated, Job, RoiGenerator


@dataclass(eq=False)
class Work:
    """One output in progress: its job and plan, the source volumes, the array being written (the
    source's dtype) and, per unit of work, the ROI it was cut as and what the method returned."""

    job: Job
    plan: CasePlan
    image: Volume
    label: Volume
    array: np.ndarray
    lesions: list[Lesion] = field(default_factory=list)
    resampling: tuple[ImageInterpolation, MaskResampling] = ("linear", "volume")
    # The source scan's intensity map when the model has one per scan (MRI brain percentiles):
    # fixed before any lesion is pasted, so every lesion is scaled like the scan it came from.
    mapping: IntensityMapping | None = None
    done: list[tuple[Roi, Region | None, Generated]] = field(default_factory=list)

    def cut(self, unit: int, generator: RoiGenerator) -> tuple[Roi, Region | None]:
        """The ROI of unit `unit`, cut from the output as it is now (earlier lesions included)."""
        preprocess = generator.conventions.preprocess
        if self.plan.whole_volume:
            roi = prepare_roi(self.image, self.label, preprocess, image_path=self.job.case.image, label_path=self.job.case.mask)
            return roi, None
        region = cut_region(
            Volume(self.array, self.image.geometry),
            self.label.array,
            self.lesions[unit],
            preprocess,
            *self.resampling,
            mapping=self.mapping,
        )
        return region.roi, region

    def paste(self, roi: Roi, region: Region | None, result: Generated) -> None:
        if region is None:
            self.array = to_source_dtype(restore_roi(roi, result.roi, self.image), self.image.array)
        else:
            paste_region(self.array, self.image.geometry, region, result.roi)
        self.done.append((roi, region, result))


def start_work(
    job: Job, plan: CasePlan, image: Volume, label: Volume, generator: RoiGenerator, config: GenerateConfig | None = None
) -> Work:
    """An output in progress, from its validated source volumes (`config`: how whole-scan boxes are resampled)."""
    config = config or GenerateConfig()
    work = Work(job, plan, image, label, image.array.copy(), resampling=(config.interpolation, config.mask_resampling))
    if not plan.whole_volume:
        work.lesions = find_lesions(label.array, generator.conventions.lesion_labels)
        work.mapping = scan_mapping(image, generator.conventions.preprocess)
    return work


def generate_works(works: Sequence[Work], generator: RoiGenerator, batch_size: int, tick: Callable[[], None]) -> None:
    """Generate every unit of `works`, batch by batch and round by round (`_units`), pasting each
    result into its output; per unit the record gets its seed and the seconds it took (its share of the batch)."""
    for batch in units(works, batch_size):
        t0 = time.perf_counter()
        cuts = [work.cut(k, generator) for work, k in batch]
        unit_jobs = [dataclasses.replace(work.job, seed=lesion_seed(work.job.seed, k)) for work, k in batch]
        results = generator(unit_jobs, [roi for roi, _ in cuts], tick)
        seconds = (time.perf_counter() - t0) / len(batch)
        for (work, _), (roi, region), job, result in zip(batch, cuts, unit_jobs, results):
            work.paste(roi, region, dataclasses.replace(result, record={**result.record, "seed": job.seed, "seconds": round(seconds, 2)}))


def units(works: Sequence[Work], batch_size: int) -> Iterator[list[tuple[Work, int]]]:
    """Batches of (output, unit) to generate together: round by round, so a lesion whose box
    overlaps an earlier one's is cut after that one is pasted."""
    for r in range(max(w.plan.n_rounds for w in works)):
        units = [(w, k) for w in works for k, rr in enumerate(w.plan.rounds) if rr == r]
        for start in range(0, len(units), batch_size):
            yield units[start : start + batch_size]


@dataclass(frozen=True)
class Shell:
    """A stand-in Work with just a plan, to count the batches before any case is read again."""

    plan: CasePlan
