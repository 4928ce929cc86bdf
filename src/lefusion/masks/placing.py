"""Automatic placement of lesion masks in whole scans: where they belong, at the size asked for.

For each scan: draw the number of lesions and their equivalent diameters (uniform in the requested
ranges), draw each lesion's shape in a 1 mm box (`shapes`: DiffMask, real LIDC nodules, or
hand-crafted), and put it at a random place where

- every lesion voxel lies inside the organ mask eroded by the margin (default: no lesion voxel
  touches a voxel outside the organ, 26-neighbourhood; `juxtapleural` relaxes this to "inside the
  organ", so lesions may touch its edge);
- it keeps `gap_mm` from every existing lesion and every lesion placed before it.

The shape is laid on the scan's own grid (spacing, origin, direction) around the chosen centre,
scaled so its equivalent diameter is the requested one: the box's voxel size is set to
d_requested / d_shape mm and the mask resampled with its volume kept (the k voxels of largest
interpolated coverage, k = volume / voxel volume). Candidate centres come from a distance map of
the organ on a grid of about 3 mm, each candidate is checked exactly on the scan's grid, and a
placed lesion removes the candidates around it. A scan without room for the request is an error
that names it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.grid import index_to_world, inside, sample, world_to_index
from ..errors import LeFusionError
from ..io import Geometry, Volume
from .shapes import Shape, largest_component

_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)
SIZE_TOLERANCE = 0.2  # a placed lesion's equivalent diameter is within 20 % of the request


@dataclass(frozen=True)
class PlacedLesion:
    """A lesion placed on a scan's grid: its voxels (N, 3) int64 (z, y, x), the shape it came from."""

    voxels: np.ndarray
    requested_diameter_mm: float
    shape: Shape

    def record(self, geometry: Geometry, label: int) -> dict[str, Any]:
        centre = self.voxels.mean(axis=0)
        volume = len(self.voxels) * float(np.prod(geometry.spacing))
        return {
            "label": label,
            "centre_zyx": [round(float(v), 2) for v in centre],
            "centre_mm_xyz": [round(float(v), 2) for v in index_to_world(geometry, centre)],
            "requested_diameter_mm": round(self.requested_diameter_mm, 2),
            "equivalent_diameter_mm": round((6.0 * volume / np.pi) ** (1 / 3), 2),
            "volume_mm3": round(volume, 2),
            "voxels": len(self.voxels),
            "shape": self.shape.record,
        }


def _local_window(shape: Sequence[int], centre: np.ndarray, half: np.ndarray) -> tuple[slice, ...]:
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre + half).astype(int) + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def lay_shape(geometry: Geometry, scan_shape: Sequence[int], shape: Shape, diameter_mm: float, centre: np.ndarray) -> np.ndarray:
    """Voxels (N, 3) of `shape` laid on the scan's grid at continuous index `centre`, scaled to an
    equivalent diameter of `diameter_mm` (module docstring); voxels outside the scan are dropped."""
    scale = diameter_mm / shape.equivalent_diameter_mm  # mm per shape-box voxel
    box = Geometry((scale,) * 3, (0.0, 0.0, 0.0), geometry.direction)
    half_box = (np.asarray(shape.mask.shape, dtype=np.float64) - 1) / 2
    origin = index_to_world(geometry, centre) - (index_to_world(box, half_box) - np.asarray(box.origin))
    box = Geometry(box.spacing, tuple(float(v) for v in origin), geometry.direction)
    reach = np.linalg.norm(np.asarray(shape.mask.shape)) / 2 * scale + 2 * max(geometry.spacing)
    window = _local_window(scan_shape, centre, reach / np.asarray(geometry.spacing))
    local = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in window], indexing="ij"), -1)
    box_index = world_to_index(box, index_to_world(geometry, local))
    fraction = np.where(inside(shape.mask.shape, box_index), sample(shape.mask.astype(np.float32), box_index, order=1), 0.0).ravel()
    k = int(round(shape.mask.sum() * scale**3 / float(np.prod(geometry.spacing))))
    chosen = np.argsort(-fraction, kind="stable")[: max(k, 1)]
    chosen = chosen[fraction[chosen] > 0]
    laid = np.zeros(fraction.shape, dtype=bool)
    laid[chosen] = True
    laid = largest_component(laid.reshape(local.shape[:3]))  # thin bridges may not survive the resampling
    return local[laid].astype(np.int64)


class Placer:
    """Places lesions into one scan (module docstring). organ: bool (D, H, W) on the scan's grid;
    occupied: bool (D, H, W) of existing lesions (or None). Placed lesions are added to `occupied`."""

    def __init__(
        self, scan: Volume, organ: np.ndarray, occupied: np.ndarray | None, margin_mm: float | None, gap_mm: float, juxtapleural: bool
    ) -> None:
        self.geometry, self.shape = scan.geometry, scan.shape
        self.organ = organ
        self.occupied = np.zeros(scan.shape, dtype=bool) if occupied is None else occupied.copy()
        self.margin_mm, self.gap_mm, self.juxtapleural = margin_mm, gap_mm, juxtapleural
        spacing = np.asarray(scan.geometry.spacing)
        self.step = np.maximum(1, np.round(3.0 / spacing)).astype(int)  # a coarse grid of about 3 mm
        coarse = organ[tuple(slice(s // 2, None, s) for s in self.step)] & ~self.occupied[tuple(slice(s // 2, None, s) for s in self.step)]
        self.coarse_spacing = spacing * self.step
        self.depth = ndimage.distance_transform_edt(coarse, sampling=self.coarse_spacing) if coarse.any() else np.zeros(coarse.shape)
        self.available = self.depth > 0

    def candidates(self, radius_mm: float, rng: np.random.Generator, n: int, optimistic: bool = False) -> np.ndarray:
        """Up to n random candidate centres (scan indices) at least radius_mm + margin inside the organ.

        The coarse depth is only good to about half a coarse voxel's diagonal: by default the
        candidates are that much deeper than needed (they fit for sure); `optimistic` ones are that
        much shallower (they may fit, `fits` decides exactly), for organs thinner than the margin of
        safety, such as white matter (its depth rarely passes 10 mm)."""
        half_diagonal = float(np.linalg.norm(self.coarse_spacing)) / 2
        margin = self.margin_mm or max(self.geometry.spacing)
        if optimistic:
            margin, half_diagonal = (0.0 if self.juxtapleural else margin), -half_diagonal
        idx = np.argwhere(self.available & (self.depth >= radius_mm + margin + half_diagonal))
        if len(idx) == 0:
            return np.zeros((0, 3))
        picks = idx[rng.choice(len(idx), size=min(n, len(idx)), replace=False)]
        return picks * self.step + self.step // 2 + rng.uniform(-0.5, 0.5, size=picks.shape) * self.step

    def fits(self, voxels: np.ndarray) -> bool:
        """Exact check on the scan's grid: inside the (eroded) organ, at least gap_mm from other lesions."""
        if len(voxels) == 0 or (voxels.min(axis=0) < 0).any() or (voxels.max(axis=0) >= np.asarray(self.shape)).any():
            return False
        spacing = np.asarray(self.geometry.spacing)
        pad = np.ceil((max(self.gap_mm, self.margin_mm or 0.0) + 2 * spacing.max()) / spacing).astype(int)
        lo, hi = voxels.min(axis=0) - pad, voxels.max(axis=0) + pad + 1
        local = tuple((voxels - lo).T)
        organ = _crop(self.organ, lo, hi)
        if self.juxtapleural:
            allowed = organ
        elif self.margin_mm is None:
            allowed = ndimage.binary_erosion(organ, _NEIGHBOURS)
        else:
            allowed = ndimage.distance_transform_edt(organ, sampling=spacing) > self.margin_mm
        if not allowed[local].all():
            return False
        occupied = _crop(self.occupied, lo, hi)
        if not occupied.any():
            return True
        if self.gap_mm <= 0:
            return not occupied[local].any()
        return bool(ndimage.distance_transform_edt(~occupied, sampling=spacing)[local].min() >= self.gap_mm)

    def add(self, voxels: np.ndarray, radius_mm: float) -> None:
        """Mark a placed lesion: occupied, and no candidate centres within its radius plus the gap."""
        self.occupied[tuple(voxels.T)] = True
        centre = voxels.mean(axis=0) / self.step
        half = (2 * radius_mm + self.gap_mm) / self.coarse_spacing + 1
        window = _local_window(self.available.shape, centre, half)
        grid = np.stack(np.meshgrid(*[np.arange(w.start, w.stop) for w in window], indexing="ij"), -1)
        near = np.linalg.norm((grid - centre) * self.coarse_spacing, axis=-1) < 2 * radius_mm + self.gap_mm
        self.available[window] &= ~near


def _crop(array: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """array[lo:hi] per axis, padded with False where the window leaves the array."""
    window = tuple(slice(max(int(a), 0), min(int(b), n)) for a, b, n in zip(lo, hi, array.shape))
    pads = [(max(0, -int(a)), max(0, int(b) - n)) for a, b, n in zip(lo, hi, array.shape)]
    return np.pad(array[window], pads)


def _try(placer: Placer, shape: Shape, diameter: float, radius: float, centres: np.ndarray) -> PlacedLesion | None:
    """The first of `centres` where the shape, laid at its size, fits; it is added to `placer`."""
    for centre in centres:
        voxels = lay_shape(placer.geometry, placer.shape, shape, diameter, centre)
        laid_mm = (6.0 * len(voxels) * float(np.prod(placer.geometry.spacing)) / np.pi) ** (1 / 3)
        if abs(laid_mm / diameter - 1) <= SIZE_TOLERANCE and placer.fits(voxels):
            placer.add(voxels, radius)
            return PlacedLesion(voxels, float(diameter), shape)
    return None


def _place_in_order(
    placer: Placer, shapes: Sequence[Shape], diameters: Sequence[float], order: Sequence[int], rng, where: str, attempts: int, retries: int
) -> dict[int, PlacedLesion]:
    placed: dict[int, PlacedLesion] = {}
    for i in order:
        shape, diameter = shapes[i], float(diameters[i])
        radius = shape.reach_fraction * diameter / 2
        lesion = _try(placer, shape, diameter, radius, placer.candidates(radius, rng, attempts))
        if lesion is None:
            lesion = _try(placer, shape, diameter, radius, placer.candidates(radius, rng, retries, optimistic=True))
        if lesion is None:
            raise LeFusionError(
                f"{where}: no room for lesion {i + 1} of {len(shapes)} ({diameter:.1f} mm) inside the organ mask "
                f"(margin {'one voxel' if placer.margin_mm is None else f'{placer.margin_mm} mm'}, gap {placer.gap_mm} mm "
                "to other lesions); ask for fewer or smaller lesions"
            )
        placed[i] = lesion
    return placed


def place_lesions(
    placer: Placer,
    shapes: Sequence[Shape],
    diameters: Sequence[float],
    rng: np.random.Generator,
    where: str,
    attempts: int = 40,
    retries: int = 200,
) -> list[PlacedLesion]:
    """Place one lesion per (shape, diameter), in order; LeFusionError naming `where` when one finds no room.

    `attempts` candidate centres deep enough for sure come first; when none of them fits (a thin
    organ such as white matter), up to `retries` more that may fit are tried, the exact check
    deciding. When a lesion finds no room, the scan starts again with the largest lesion first
    (small ones fit in what big ones leave). Placements that succeeded without these fallbacks
    are unchanged by them. Returned in the order given."""
    before = copy.deepcopy(placer)
    try:
        placed = _place_in_order(placer, shapes, diameters, range(len(shapes)), rng, where, attempts, retries)
    except LeFusionError:
        if len(shapes) < 2:
            raise
        placer.__dict__.update(copy.deepcopy(before.__dict__))
        largest_first = sorted(range(len(shapes)), key=lambda k: -float(diameters[k]))
        placed = _place_in_order(placer, shapes, diameters, largest_first, rng, where, attempts, retries)
    return [placed[i] for i in range(len(shapes))]
