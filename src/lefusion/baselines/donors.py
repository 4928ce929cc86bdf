"""Real lesions to copy (Copy-Paste) or to fit texture presets on (Hand-Crafted): read once, validated.

Donors are the pathological TRAINING cases of a dataset root in any supported layout; held-out test
cases are never used, so synthetic training data cannot leak test lesions. Each donor lesion is
kept whole (not cut to the ROI) as voxel positions + intensities in the model's axis order and
[-1, 1] units, mapped with the donor volume's own intensity mapping (CT: the HU window; MRI: the
donor's min-max), which is what makes intensities comparable across scans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..control.presets import fit_presets
from ..data.conventions import DataConventions
from ..data.layouts import Case, find_cases
from ..data.roi import intensity_mapping, validate_pair
from ..errors import LeFusionError
from ..io import read_volume
from .copy_paste import DonorLesion


def donor_cases(root: str | Path) -> list[Case]:
    """The pathological training cases under `root`; LeFusionError if there are none."""
    cases = [c for c in find_cases(root, role="pathological") if c.split == "train"]
    if not cases:
        raise LeFusionError(f"{root}: no pathological training cases to take donor lesions from (all are in the test split)")
    return cases


def case_lesions(case: Case, conventions: DataConventions) -> list[DonorLesion]:
    """The lesion classes of one real case, one DonorLesion per class present.

    Raises LeFusionError naming the files for an unreadable or invalid pair, or a mask without any
    lesion voxel (an empty donor lesion).
    """
    image, label = read_volume(case.image), read_volume(case.mask)  # type: ignore[arg-type]
    validate_pair(image, label, conventions.lesion_labels, conventions.allowed_labels, case.image, case.mask, require_lesion=True)
    mapping = intensity_mapping(image, conventions.preprocess, case.image)
    axes = conventions.preprocess.axes
    labels = np.rint(label.array.transpose(axes)).astype(np.int64)
    array = image.array.transpose(axes)
    lesions = []
    for lesion_id in conventions.lesion_labels:
        inside = labels == lesion_id
        if inside.any():
            values = mapping.forward(array[inside]).astype(np.float32)
            lesions.append(DonorLesion(str(case.image), lesion_id, np.argwhere(inside), values))
    return lesions


def load_donors(root: str | Path, conventions: DataConventions) -> list[DonorLesion]:
    """Every lesion class of every pathological training case under `root` (see module docstring)."""
    return [lesion for case in donor_cases(root) for lesion in case_lesions(case, conventions)]


def donor_histograms(donors: list[DonorLesion], lesion_labels: tuple[int, ...], bins: int) -> torch.Tensor:
    """(N_cases, K * bins) lesion histograms of the donors, per case (class histograms concatenated,
    an absent class all zeros), as `lefusion.data.histograms.lesion_histogram` makes them."""
    by_case: dict[str, dict[int, DonorLesion]] = {}
    for lesion in donors:
        by_case.setdefault(lesion.source, {})[lesion.label] = lesion
    rows = []
    for lesions in by_case.values():
        parts = []
        for lesion_id in lesion_labels:
            lesion = lesions.get(lesion_id)
            if lesion is None:
                parts.append(torch.zeros(bins))
                continue
            counts = torch.histc(torch.from_numpy(lesion.values), bins=bins, min=-1.0, max=1.0)
            parts.append(counts / len(lesion.values))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def donor_presets(donors: list[DonorLesion], conventions: DataConventions, k: int = 3) -> list[tuple[float, ...]]:
    """k texture presets fitted to the donors' lesion histograms, as training fits them."""
    bins = conventions.preprocess.hist_bins
    return fit_presets(donor_histograms(donors, conventions.lesion_labels, bins), k, seed=0, bins=bins)
