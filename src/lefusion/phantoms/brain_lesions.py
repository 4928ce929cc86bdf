"""MS-like white-matter lesions for the brain phantom, drawn on one subject's tissue maps.

Three kinds, as a neuroradiologist sorts them on FLAIR (McDonald criteria locations):

- periventricular: touching a lateral / third ventricle, ovoid, the long axis along the ventricle
  wall's normal, i.e. perpendicular to the wall and along the medullary veins ("Dawson's fingers");
- juxtacortical: in the white matter touching the cortex (cut off where the grey matter starts);
- deep white matter: away from both, rounder.

Sizes: the long diameter is log-uniform in 3-15 mm (most lesions small, as in real cohorts), the
short ones 35-60 % of it for periventricular ovoids and 60-95 % otherwise. Lesions are kept apart
(their bounding spheres at least ~2 mm plus a voxel from each other), so every lesion is one
connected component of the mask. Intensity: 1.4-1.9 x the subject's white matter on FLAIR, a
little brighter in the centre, with a partial-volume rim of ~0.6 mm; the change fades out where
the white matter ends, and the mask is the lesion's support inside the white matter label.

Load per subject: the number is drawn log-normal (median 12, a few to ~50), the kind per lesion
45 % periventricular, 30 % deep, 25 % juxtacortical; a kind with no room left is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .noise import ellipsoid_sdf, random_rotation, smooth_field, soft_occupancy

KINDS = ("periventricular", "deep", "juxtacortical")
KIND_SHARES = (0.45, 0.30, 0.25)
DIAMETER_MM = (3.0, 15.0)
WM = 3  # organ label of white matter (the on-disk contract: 1 CSF, 2 GM, 3 WM)
GM = 2


@dataclass
class Subject:
    """One subject's maps on its output grid, (D, H, W) at `spacing` (z, y, x) mm.

    flair: float32 noise-free FLAIR (changed in place by `add_lesions`); labels: uint8 organ map;
    wm: float32 white-matter probability; ventricles: bool; white: the subject's WM intensity."""

    flair: np.ndarray
    labels: np.ndarray
    wm: np.ndarray
    ventricles: np.ndarray
    spacing: tuple[float, float, float]
    white: float


def lesion_count(rng: np.random.Generator) -> int:
    """Lesions in one pathological subject: log-normal, median 12, clipped to 2-50."""
    return int(np.clip(np.rint(np.exp(rng.normal(np.log(12.0), 0.75))), 2, 50))


class _Fields:
    """Placement fields on a coarse grid (~2 mm, for speed): distances in mm to the ventricles, to
    the cortex, and from the white matter's edge, and the ventricle-distance gradient."""

    def __init__(self, s: Subject):
        self.step = np.array([max(1, int(round(2.0 / sp))) for sp in s.spacing])
        self.mm = np.asarray(s.spacing) * self.step
        sub = tuple(slice(None, None, int(k)) for k in self.step)
        labels = s.labels[sub]
        self.wm = labels == WM
        vent = s.ventricles[sub]
        if vent.any():
            self.d_vent, self.nearest = ndimage.distance_transform_edt(~vent, sampling=self.mm, return_indices=True)
        else:
            self.d_vent, self.nearest = np.full(vent.shape, 1e3), None
        self.d_cortex = ndimage.distance_transform_edt(labels != GM, sampling=self.mm)
        self.d_edge = ndimage.distance_transform_edt(self.wm, sampling=self.mm)
        self.taken = np.zeros(self.wm.shape, bool)  # coarse voxels inside another lesion's keep-out ball

    def normal(self, centre_mm: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Unit vector (z, y, x) from the nearest ventricle voxel to `centre_mm`: the wall's normal."""
        if self.nearest is None:
            return np.array([0.0, 0.0, 1.0])
        wall = self.nearest[(slice(None), *index)] * self.mm
        v = np.asarray(centre_mm) - wall
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else np.array([0.0, 0.0, 1.0])

    def block(self, centre_mm: np.ndarray, radius_mm: float) -> None:
        grids = np.ogrid[tuple(slice(0, n) for n in self.taken.shape)]
        d2 = sum((g * m - c) ** 2 for g, m, c in zip(grids, self.mm, centre_mm))
        self.taken |= d2 <= radius_mm**2


def _candidates(f: _Fields, kind: str, a: float, b: float) -> np.ndarray:
    """Coarse voxel indices where a lesion of long / short semi-axes a, b (mm) may be centred."""
    ok = f.wm & ~f.taken
    slack = float(f.mm.max())
    if kind == "periventricular":  # the inner end of the ovoid at the wall: centre ~a from it
        ok &= np.abs(f.d_vent - 0.85 * a) <= slack
    elif kind == "juxtacortical":
        ok &= (f.d_cortex <= b + slack) & (f.d_vent > 10.0)
    else:
        ok &= (f.d_vent > 10.0) & (f.d_cortex > a + 3.0) & (f.d_edge >= b)
    return np.argwhere(ok)


def add_lesions(s: Subject, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[dict]]:
    """Draw up to n lesions into `s.flair` (in place). Returns the lesion mask (bool, (D, H, W))
    and per lesion: kind, long / short diameters (mm), centre (voxel, z y x), long-axis direction
    (z y x), voxels and volume (ml); `centre_mm` (grid mm, an array) is for the caller to drop."""
    f = _Fields(s)
    spacing = np.asarray(s.spacing)
    mask = np.zeros(s.labels.shape, bool)
    min_semi = max(DIAMETER_MM[0] / 2, 0.75 * float(spacing.max()))  # a lesion must cover voxel centres
    gap = 2.0 + float(spacing.max())
    lesions: list[dict] = []
    for _ in range(n):
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_SHARES))]
        a = max(min_semi, float(np.exp(rng.uniform(np.log(DIAMETER_MM[0]), np.log(DIAMETER_MM[1])))) / 2)
        ratio = rng.uniform(0.35, 0.6) if kind == "periventricular" else rng.uniform(0.6, 0.95)
        b = max(min_semi * 0.8, a * ratio)
        c = max(min_semi * 0.8, a * (ratio if kind == "periventricular" else rng.uniform(0.6, 0.95)))
        found = _candidates(f, kind, a, b)
        placed = np.array([other["centre_mm"] for other in lesions]).reshape(-1, 3)
        reach_others = np.array([other["diameter_mm"] / 2 for other in lesions]) + a + gap
        for _ in range(20 if len(found) else 0):  # a few draws until one keeps clear of the others
            index = found[int(rng.integers(len(found)))]
            centre = index * f.mm + rng.uniform(-0.5, 0.5, 3) * f.mm
            if not len(placed) or np.all(np.linalg.norm(placed - centre, axis=1) >= reach_others):
                break
        else:
            continue
        rotation = random_rotation(rng)
        if kind == "periventricular":  # first axis along the wall normal, the others any way around it
            normal = f.normal(centre, index)
            helper = rotation[:, 0] - normal * float(rotation[:, 0] @ normal)
            helper /= np.linalg.norm(helper) or 1.0
            rotation = np.stack([normal, helper, np.cross(normal, helper)], axis=1)
        reach = a + 2.0
        lo = np.maximum(np.floor((centre - reach) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((centre + reach) / spacing).astype(int) + 1, s.labels.shape)
        box = tuple(slice(int(start), int(stop)) for start, stop in zip(lo, hi))
        shape = tuple(int(stop - start) for start, stop in zip(lo, hi))
        sdf = ellipsoid_sdf(shape, s.spacing, centre - lo * spacing, (a, b, c), rotation)  # type: ignore[arg-type]
        sdf = sdf - np.float32(0.08 * b) * smooth_field(rng, shape, max(b * 0.6, 1.0), s.spacing)  # type: ignore[arg-type]
        support, n_comp = ndimage.label((sdf < 0) & (s.labels[box] == WM), structure=np.ones((3, 3, 3)))
        if not n_comp:
            continue
        keep = support == int(np.argmax(np.bincount(support.ravel())[1:])) + 1
        occupancy = soft_occupancy(sdf, 0.6) * np.clip(s.wm[box] * 1.6, 0.0, 1.0)
        inner = np.clip(-sdf / np.float32(b), 0.0, 1.0)  # 0 at the surface, 1 at the centre
        bright = np.float32(s.white * rng.uniform(1.4, 1.9)) * (1.0 + np.float32(0.08) * inner)
        s.flair[box] = s.flair[box] * (1.0 - occupancy) + bright * occupancy
        mask[box] |= keep
        f.block(centre, a + gap)
        voxels = int(keep.sum())
        lesions.append(
            {
                "kind": kind,
                "diameter_mm": round(2 * a, 2),
                "short_diameters_mm": [round(2 * b, 2), round(2 * c, 2)],
                "centre_vox": [round(float(v), 2) for v in centre / spacing],
                "centre_mm": centre,
                "long_axis_zyx": [round(float(v), 4) for v in rotation[:, 0]],
                "voxels": voxels,
                "volume_ml": round(voxels * float(np.prod(spacing)) / 1000.0, 4),
            }
        )
    return mask, lesions
