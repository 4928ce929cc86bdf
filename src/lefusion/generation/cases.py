"""What generation does with each case: read and validate it, and decide how its lesions are cut.

A case that is an ROI already (it fits the model's ROI at the model's spacing) is cut as one
centred ROI holding all its lesions, exactly as before whole scans were supported. Any other case
(a whole scan) gets one box per lesion (`lefusion.data.regions`); lesions whose boxes overlap are
generated one after another, each seeing the one before: a lesion's round is one more than the
latest round of an earlier lesion whose box it overlaps, and rounds run in order.

Planning reads every case once and keeps nothing but the plan, so thousands of whole scans can be
validated before anything is written; generation reads each case again when its turn comes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..data.grid import index_to_world, world_to_index
from ..data.layouts import Case
from ..data.regions import RegionBox, check_fits, cut_region, find_lesions, region_box, scan_mapping, uses_whole_volume
from ..data.roi import prepare_roi, validate_pair
from ..errors import LeFusionError
from ..io import Geometry, Volume, read_volume
from .types import RoiGenerator, output_seed


@dataclass(frozen=True)
class CasePlan:
    """A validated case: `whole_volume` (one centred ROI) or one box per lesion, and the round of
    each unit of work (one entry for a whole-volume case)."""

    case: Case
    whole_volume: bool
    rounds: tuple[int, ...]

    @property
    def n_rounds(self) -> int:
        return max(self.rounds) + 1


def read_case(case: Case, generator: RoiGenerator) -> tuple[Volume, Volume]:
    """Image and label of a case, validated for `generator`'s conventions; LeFusionError naming the file."""
    conv = generator.conventions
    image, label = read_volume(case.image), read_volume(case.mask)  # type: ignore[arg-type]
    try:
        validate_pair(image, label, conv.lesion_labels, conv.allowed_labels, case.image, case.mask, require_lesion=True)
    except LeFusionError as exc:
        if "label" not in str(exc):
            raise
        # a label problem is often the wrong checkpoint (or conventions) for this data: say what is expected
        raise LeFusionError(f"{exc} ({generator.label_hint})") from exc
    return image, label


def plan_case(case: Case, generator: RoiGenerator) -> CasePlan:
    """Read, validate and plan one case (see module docstring); every check that can fail runs here."""
    image, label = read_case(case, generator)
    return plan_volumes(case, image, label, generator)


def plan_volumes(case: Case, image: Volume, label: Volume, generator: RoiGenerator) -> CasePlan:
    """The plan of a validated case already in memory (`case` names its files in messages)."""
    preprocess = generator.conventions.preprocess
    if uses_whole_volume(image, preprocess):
        roi = prepare_roi(image, label, preprocess, image_path=case.image, label_path=case.mask)
        if not torch.isin(roi.label, torch.tensor(generator.conventions.lesion_labels)).any():
            raise LeFusionError(f"{case.mask}: the lesion mask lies outside the centred {preprocess.roi_shape} ROI")
        return CasePlan(case, True, (0,))
    lesions = find_lesions(label.array, generator.conventions.lesion_labels)
    boxes = [region_box(image.geometry, lesion, preprocess) for lesion in lesions]
    try:
        mapping = scan_mapping(image, preprocess)
    except LeFusionError as exc:
        raise LeFusionError(f"{case.image}: {exc}") from exc
    for lesion, box in zip(lesions, boxes):
        check_fits(image.geometry, lesion, box, str(case.mask))
        try:  # cutting checks the rest (e.g. an MRI box without intensity range) before anything is written
            cut_region(image, label.array, lesion, preprocess, mapping=mapping)
        except LeFusionError as exc:
            raise LeFusionError(f"{case.image}: lesion {lesion.index + 1}: {exc}") from exc
    return CasePlan(case, False, overlap_rounds(image.geometry, boxes))


def _index_range(source: Geometry, box: RegionBox) -> np.ndarray:
    """(2, 3) lowest and highest scan index (z, y, x) a box's corners reach."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in box.shape])), dtype=np.float64)
    index = world_to_index(source, index_to_world(box.geometry, corners))
    return np.stack([index.min(axis=0), index.max(axis=0)])


def overlap_rounds(source: Geometry, boxes: list[RegionBox]) -> tuple[int, ...]:
    """Round of each box: 1 + the latest round of an earlier box it overlaps, else 0."""
    ranges = [_index_range(source, b) for b in boxes]
    rounds: list[int] = []
    for i, (lo, hi) in enumerate(ranges):
        touching = [rounds[j] for j in range(i) if np.all(lo <= ranges[j][1] + 0.5) and np.all(ranges[j][0] <= hi + 0.5)]
        rounds.append(max(touching) + 1 if touching else 0)
    return tuple(rounds) if rounds else (0,)


def lesion_seed(seed: int, lesion: int) -> int:
    """The seed of lesion `lesion` of an output seeded `seed` (lesion 0 takes the output's own)."""
    return seed if lesion == 0 else output_seed(seed, "lesion", str(lesion))
