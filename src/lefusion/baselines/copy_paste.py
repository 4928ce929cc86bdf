"""Copy-Paste baseline: a real lesion's texture pasted into the target mask of another scan.

A donor lesion (one lesion class of one real pathological case) is reduced to its voxel positions
and intensities in the model's [-1, 1] units. Filling a target mask (the shapes differ):

1. aligned copy — the two centroids are aligned (shifted by a whole number of voxels, so donor
   voxels land on target voxels) and every target voxel the donor lesion covers takes the donor
   voxel's value, so the donor's texture keeps its native scale;
2. nearest in normalised position — every target voxel the donor does not cover takes the value of
   the donor voxel nearest to it after both lesions' offsets from their centroids are divided by
   their per-axis spread (std of the voxel positions, each voxel counted as a unit cube, so
   sqrt(var + 1/12) > 0 even for a one-slice lesion). A larger target thus borrows the donor's rim
   for its rim and its core for its core instead of smearing the donor's edge outwards.

Only mask voxels change: the background is returned bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..errors import LeFusionError
from .types import BaselineOutput


@dataclass(frozen=True, eq=False)
class DonorLesion:
    """One lesion class of one real case.

    coords: (N, 3) int64 voxel indices (z, y, x) in the model's axis order; values: (N,) float32
    intensities in [-1, 1] (the ROI mapping of the donor's own volume); source: the donor image
    path, recorded in the manifest; label: the lesion label id these voxels carry.
    """

    source: str
    label: int
    coords: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if len(self.coords) == 0:
            raise LeFusionError(f"{self.source}: empty donor lesion (no voxel with label {self.label})")


def _spread(coords: np.ndarray) -> np.ndarray:
    """Per-axis spread of voxel positions (3,): std with each voxel a unit cube (variance + 1/12)."""
    return np.sqrt(coords.var(axis=0) + 1.0 / 12.0)


def paste_values(target: np.ndarray, donor: DonorLesion) -> np.ndarray:
    """Donor intensities for every target voxel (module docstring, steps 1 and 2).

    target: (M, 3) int voxel indices (z, y, x) of the target lesion, M >= 1. Returns (M,) float32.
    """
    target = np.asarray(target, dtype=np.int64)
    t_centre, d_centre = target.mean(axis=0), donor.coords.mean(axis=0)
    # Step 1: a dense index grid over the donor's bounding box answers "which donor voxel is here?".
    lo = donor.coords.min(axis=0)
    extent = donor.coords.max(axis=0) - lo + 1
    grid = np.full(tuple(extent), -1, dtype=np.int64)
    grid[tuple((donor.coords - lo).T)] = np.arange(len(donor.coords))
    query = target + np.rint(d_centre - t_centre).astype(np.int64) - lo
    inside = np.all((query >= 0) & (query < extent), axis=1)
    index = np.full(len(target), -1, dtype=np.int64)
    index[inside] = grid[tuple(query[inside].T)]
    # Step 2: uncovered voxels take the donor voxel nearest in normalised position.
    missing = index < 0
    if missing.any():
        tree = cKDTree((donor.coords - d_centre) / _spread(donor.coords))
        _, nearest = tree.query((target[missing] - t_centre) / _spread(target))
        index[missing] = nearest
    return donor.values[index]


def choose_donor(donors: Sequence[DonorLesion], label: int, generator: torch.Generator) -> DonorLesion:
    """A donor of lesion class `label`, drawn uniformly with `generator` (one draw)."""
    candidates = [d for d in donors if d.label == label]
    if not candidates:
        raise LeFusionError(f"no donor lesion with label {label}: no real case left to copy that lesion class from")
    return candidates[int(torch.randint(len(candidates), (1,), generator=generator))]


def copy_paste(
    image: np.ndarray,
    label: np.ndarray,
    lesion_labels: tuple[int, ...],
    generator: torch.Generator,
    *,
    donors: Sequence[DonorLesion],
) -> BaselineOutput:
    """Fill each lesion class of `label` with a randomly drawn real donor lesion of that class.

    image: (D, H, W) float in [-1, 1]; label: (D, H, W) integer label ids. One donor is drawn per
    class present in `label`, in `lesion_labels` order. Returns the new image (same shape and
    dtype; equal to `image` outside the lesion classes) and a record {"donors": {label: source}}.
    """
    out = image.copy()
    chosen: dict[str, str] = {}
    for lesion_id in lesion_labels:
        where = np.argwhere(label == lesion_id)
        if len(where) == 0:
            continue
        donor = choose_donor(donors, lesion_id, generator)
        out[tuple(where.T)] = np.clip(paste_values(where, donor), -1.0, 1.0).astype(out.dtype)
        chosen[str(lesion_id)] = donor.source
    return BaselineOutput(out, {"donors": chosen})
