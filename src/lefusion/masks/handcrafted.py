"""Hand-crafted lesion masks: the synthetic-tumour baseline of Hu et al. 2023 ("Label-free liver
tumor segmentation", CVPR), i.e. a few overlapping random ellipsoids with a smooth random warp.

The shape is drawn once at unit size as an implicit function of normalised coordinates
``u = x / s`` (x in mm from the centre): inside where, for some ellipsoid j,
``|| diag(1 / a_j) R_j^T (u + d(u) - c_j) || <= 1``, with ``d`` a smooth random displacement field
(a sum of low-frequency sinusoids, so it is resolution-independent and scales with the shape).
The scale ``s`` is then adjusted until the voxelised mask's equivalent diameter matches the
request, so the same draw gives the same shape at any size and spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LeFusionError


@dataclass(frozen=True)
class _Draw:
    centres: np.ndarray  # (J, 3) ellipsoid centres, unit radius
    inv_axes: np.ndarray  # (J, 3) 1 / semi-axes
    rotations: np.ndarray  # (J, 3, 3) columns = ellipsoid axes
    wave_k: np.ndarray  # (3, M, 3) wave vectors (rad per unit radius), one set per displacement component
    wave_phase: np.ndarray  # (3, M)
    wave_amp: np.ndarray  # (3, M)

    @property
    def reach(self) -> float:
        """Bound on |u| of any inside point: furthest ellipsoid point plus the largest warp."""
        return float(
            (np.linalg.norm(self.centres, axis=1) + 1.0 / self.inv_axes.min(axis=1)).max() + np.abs(self.wave_amp).sum(axis=1).max()
        )


def _rotation(gen: np.random.Generator) -> np.ndarray:
    q = gen.normal(size=4)  # uniform random rotation from a normalised Gaussian quaternion
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _draw(gen: np.random.Generator, n_ellipsoids: int | None, warp: float) -> _Draw:
    n = int(gen.integers(2, 5)) if n_ellipsoids is None else int(n_ellipsoids)
    if n < 1:
        raise LeFusionError(f"n_ellipsoids must be >= 1, got {n}")
    # One main body near the centre and smaller lobes on its surface: lobulated, still one lesion.
    axes = [gen.uniform(0.75, 1.25, size=3)] + [gen.uniform(0.35, 0.75, size=3) for _ in range(n - 1)]
    centres = [np.zeros(3)]
    for _ in range(n - 1):
        direction = gen.normal(size=3)
        centres.append(direction / np.linalg.norm(direction) * gen.uniform(0.3, 0.7))
    modes = 4
    directions = gen.normal(size=(3, modes, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    # 0.25-0.6 cycles per unit radius: a smooth bulge or dent or two across the lesion.
    wave_k = 2 * np.pi * directions * gen.uniform(0.25, 0.6, size=(3, modes, 1))
    wave_amp = warp * gen.uniform(0.5, 1.0, size=(3, modes)) / np.sqrt(modes)
    return _Draw(
        np.array(centres),
        1.0 / np.array(axes),
        np.stack([_rotation(gen) for _ in range(n)]),
        wave_k,
        gen.uniform(0, 2 * np.pi, size=(3, modes)),
        wave_amp,
    )


def _inside(draw: _Draw, u: np.ndarray) -> np.ndarray:
    """u: (N, 3) normalised coordinates -> bool (N,)."""
    phase = np.einsum("cmd,nd->cnm", draw.wave_k, u) + draw.wave_phase[:, None, :]  # (3, N, M)
    warped = u + (draw.wave_amp[:, None, :] * np.sin(phase)).sum(axis=-1).T  # (N, 3)
    inside = np.zeros(len(u), dtype=bool)
    for centre, inv_axes, rot in zip(draw.centres, draw.inv_axes, draw.rotations):
        local = (warped - centre) @ rot * inv_axes  # coordinates along the ellipsoid's axes
        inside |= (local * local).sum(axis=1) <= 1.0
    return inside


def _render(draw: _Draw, scale: float, center: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxelise at scale ``scale`` mm on the voxel lattice around ``center`` (voxel index units),
    unclipped by the array. Returns (bool window, integer index of its first voxel)."""
    half = np.ceil(draw.reach * scale / spacing).astype(int) + 1
    first = np.round(center).astype(int) - half
    grids = np.meshgrid(*[np.arange(f, f + 2 * h + 1) for f, h in zip(first, half)], indexing="ij")
    mm = np.stack([(g - c) * s for g, c, s in zip(grids, center, spacing)], axis=-1).reshape(-1, 3)
    return _inside(draw, mm / scale).reshape(grids[0].shape), first


def handcrafted_mask(
    shape: Sequence[int],
    diameter_mm: float,
    center: Sequence[float],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    generator: np.random.Generator | None = None,
    boundary: np.ndarray | None = None,
    n_ellipsoids: int | None = None,
    warp: float = 0.25,
    rtol: float = 0.02,
    max_iter: int = 10,
) -> np.ndarray:
    """A random lobulated, warped lesion mask of a requested size.

    shape: (D, H, W) output size; diameter_mm: target equivalent diameter (sphere of equal
    volume) in mm; center: (z, y, x) lesion centre in voxel index units (fractions allowed);
    spacing: (z, y, x) voxel size in mm; generator: numpy Generator (all randomness; same seed,
    same mask); boundary: optional bool (D, H, W) organ mask the lesion is clipped to;
    n_ellipsoids: number of overlapping ellipsoids (default random 2-4); warp: displacement
    amplitude relative to the lesion radius. The scale is refined (s <- s (V*/V)^(1/3)) until the
    equivalent diameter is within ``rtol`` or ``max_iter`` steps; the closest result is kept.
    Size is measured before clipping by the array edge or ``boundary``, so a lesion that is
    clipped is smaller than requested. Returns bool (D, H, W).
    """
    shape = tuple(int(v) for v in shape)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    center_arr = np.asarray(center, dtype=np.float64)
    if len(shape) != 3 or spacing_arr.shape != (3,) or center_arr.shape != (3,):
        raise LeFusionError("shape, center and spacing must each have 3 entries (z, y, x)")
    if not diameter_mm > 0:
        raise LeFusionError(f"diameter_mm must be positive, got {diameter_mm}")
    if boundary is not None and np.shape(boundary) != shape:
        raise LeFusionError(f"boundary mask has shape {np.shape(boundary)}, expected {shape}")
    draw = _draw(generator if generator is not None else np.random.default_rng(), n_ellipsoids, warp)

    voxel = float(spacing_arr.prod())
    target = np.pi / 6.0 * diameter_mm**3
    scale, best = diameter_mm / 2.0, None
    for _ in range(max_iter):
        window, first = _render(draw, scale, center_arr, spacing_arr)
        volume = window.sum() * voxel
        err = abs((6.0 * volume / np.pi) ** (1 / 3) / diameter_mm - 1.0)
        if best is None or err < best[0]:
            best = (err, window, first)
        if err <= rtol:
            break
        # Equivalent diameter scales linearly with s; an empty render (tiny s) doubles it.
        scale *= (target / volume) ** (1 / 3) if volume > 0 else 2.0
    _, window, first = best

    out = np.zeros(shape, dtype=bool)
    lo = np.maximum(first, 0)
    hi = np.minimum(first + window.shape, shape)
    if (hi > lo).all():
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = window[tuple(slice(a - f, b - f) for a, b, f in zip(lo, hi, first))]
    if boundary is not None:
        out &= np.asarray(boundary, dtype=bool)
    return out
