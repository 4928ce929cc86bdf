"""Procedural building blocks shared by the phantoms: smooth random fields, lobulated blobs, tubes.

All functions work on (D, H, W) = (z, y, x) grids with a physical voxel `spacing` (z, y, x) in mm,
so shapes look the same whatever the voxel anisotropy. Every random draw comes from the numpy
`Generator` passed in, so the same generator state gives byte-identical arrays.

Shapes are returned as signed distance-like fields in mm (negative inside, 0 on the surface):
callers turn them into hard masks (`sdf < 0`) and into partial-volume occupancies with
`soft_occupancy`, and can combine them (union = minimum) before either step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]


def mm_to_vox(sigma_mm: float | Sequence[float], spacing: Spacing3) -> tuple[float, float, float]:
    """A length in mm (scalar or per axis) as (z, y, x) voxel counts."""
    sig = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
    return tuple(float(s / sp) for s, sp in zip(sig, spacing))  # type: ignore[return-value]


def smooth_field(rng: np.random.Generator, shape: Shape3, sigma_mm: float | Sequence[float], spacing: Spacing3) -> np.ndarray:
    """Gaussian-filtered white noise, standardised to mean 0 / std 1. Returns float32 (D, H, W).

    `sigma_mm` is the correlation length; wrap mode avoids the variance drop a reflecting border
    gives, which would otherwise show as calmer texture along the ROI edges.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    field = ndimage.gaussian_filter(white, mm_to_vox(sigma_mm, spacing), mode="wrap", truncate=3.0)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def fractal_field(
    rng: np.random.Generator,
    shape: Shape3,
    spacing: Spacing3,
    sigmas_mm: Sequence[float | Sequence[float]] = (0.8, 2.0, 5.0),
    weights: Sequence[float] = (0.5, 0.3, 0.2),
) -> np.ndarray:
    """Sum of smooth fields at several scales (a cheap 1/f-like texture), std 1. float32 (D, H, W)."""
    total = np.zeros(shape, dtype=np.float32)
    for sig, w in zip(sigmas_mm, weights):
        total += np.float32(w) * smooth_field(rng, shape, sig, spacing)
    return total / np.float32(total.std() or 1.0)


def correlated_noise(rng: np.random.Generator, shape: Shape3, std: float, sigma_vox: float = 0.6) -> np.ndarray:
    """Scanner-like noise: white noise blurred by `sigma_vox` voxels (reconstruction kernel), then
    rescaled so its std is `std` (image units). float32 (D, H, W)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    return noise * np.float32(std / (float(noise.std()) or 1.0))


def soft_occupancy(sdf_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume fraction in [0, 1] from a signed distance (mm): 0.5 on the surface, and a
    logistic ramp of width ~`edge_mm` (small = sharp boundary, large = hazy). float32."""
    z = np.clip(sdf_mm / np.float32(edge_mm), -30.0, 30.0)
    return (1.0 / (1.0 + np.exp(z))).astype(np.float32)


def grid_mm(shape: Shape3, spacing: Spacing3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in mm as broadcastable float32 arrays of shapes (D,1,1), (1,H,1), (1,1,W)."""
    axes = [np.arange(n, dtype=np.float32) * np.float32(sp) for n, sp in zip(shape, spacing)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def ellipsoid_sdf(
    shape: Shape3, spacing: Spacing3, centre_mm: Sequence[float], semi_axes_mm: Sequence[float], rotation: np.ndarray
) -> np.ndarray:
    """Approximate signed distance (mm) to a rotated ellipsoid: (normalised radius - 1) * mean
    semi-axis. Exact for spheres, close enough for blending elsewhere. float32 (D, H, W)."""
    z, y, x = grid_mm(shape, spacing)
    d = (z - np.float32(centre_mm[0]), y - np.float32(centre_mm[1]), x - np.float32(centre_mm[2]))
    rot = rotation.astype(np.float32)
    q = np.zeros(shape, dtype=np.float32)
    for i in range(3):  # coordinates in the ellipsoid's own frame, scaled by its semi-axes
        u = rot[0, i] * d[0] + rot[1, i] * d[1] + rot[2, i] * d[2]
        q += (u / np.float32(semi_axes_mm[i])) ** 2
    mean_axis = float(np.mean(semi_axes_mm))
    return ((np.sqrt(q) - 1.0) * mean_axis).astype(np.float32)


def lobulated_blob_sdf(
    rng: np.random.Generator,
    shape: Shape3,
    spacing: Spacing3,
    centre_mm: Sequence[float],
    diameter_mm: float,
    *,
    elongation: float = 0.25,
    n_lobes: int = 2,
    warp: float = 0.15,
) -> np.ndarray:
    """A lesion-like solid: a random ellipsoid, unioned with `n_lobes` smaller offset ellipsoids
    (lobulation), whose surface is pushed in and out by a smooth random field (`warp`, fraction of
    the radius). The nominal size is `diameter_mm`. Returns the signed distance in mm, float32 (D, H, W).
    """
    radius = diameter_mm / 2.0
    axes = radius * rng.uniform(1.0 - elongation, 1.0 + elongation, size=3)
    axes *= radius / np.cbrt(np.prod(axes))  # keep the volume of a sphere of the nominal diameter
    sdf = ellipsoid_sdf(shape, spacing, centre_mm, axes, random_rotation(rng))
    for _ in range(n_lobes):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        lobe_r = radius * rng.uniform(0.4, 0.7)
        offset = direction * (radius - lobe_r * rng.uniform(0.2, 0.7))
        lobe_axes = lobe_r * rng.uniform(0.8, 1.2, size=3)
        lobe = ellipsoid_sdf(shape, spacing, np.asarray(centre_mm) + offset, lobe_axes, random_rotation(rng))
        sdf = np.minimum(sdf, lobe)
    if warp > 0:
        # Correlation length tied to the blob size, so small and large nodules look equally bumpy.
        bumps = smooth_field(rng, shape, max(radius * 0.45, 1.0), spacing)
        sdf = sdf - np.float32(warp * radius) * bumps
    return sdf


def _segment_distance(z: np.ndarray, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Distance (mm) from grid points to the surface of a capsule from a to b, radius ra -> rb."""
    ab = b - a
    length2 = float(ab @ ab) or 1e-6
    t = ((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / np.float32(length2)
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (x - a[2] - t * ab[2]) ** 2)
    return dist - (ra + t * (rb - ra))


def tube_sdf(shape: Shape3, spacing: Spacing3, polylines: Sequence[tuple[np.ndarray, np.ndarray]], far_mm: float = 50.0) -> np.ndarray:
    """Signed distance (mm) to a union of tubes. Each polyline is (points (N, 3) in mm (z, y, x),
    radii (N,) in mm). Each segment only touches its bounding box (plus a margin), which keeps this
    fast; voxels farther than that keep `far_mm`. float32 (D, H, W)."""
    out = np.full(shape, far_mm, dtype=np.float32)
    spacing_arr = np.asarray(spacing, dtype=float)
    margin = 3.0  # mm beyond the tube surface, enough for any blending ramp used downstream
    for points, radii in polylines:
        for i in range(len(points) - 1):
            a, b = points[i].astype(np.float32), points[i + 1].astype(np.float32)
            reach = max(radii[i], radii[i + 1]) + margin
            lo = np.floor((np.minimum(a, b) - reach) / spacing_arr).astype(int)
            hi = np.ceil((np.maximum(a, b) + reach) / spacing_arr).astype(int) + 1
            lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
            if np.any(hi <= lo):
                continue
            z, y, x = grid_mm(tuple(hi - lo), spacing)  # type: ignore[arg-type]
            off = (lo * spacing_arr).astype(np.float32)
            d = _segment_distance(z + off[0], y + off[1], x + off[2], a, b, float(radii[i]), float(radii[i + 1]))
            view = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            np.minimum(view, d, out=view)
    return out


def random_walk_tube(
    rng: np.random.Generator,
    start_mm: np.ndarray,
    direction: np.ndarray,
    radius_mm: float,
    extent_mm: np.ndarray,
    *,
    step_mm: float = 2.0,
    wiggle: float = 0.18,
    taper: float = 0.985,
    max_steps: int = 60,
) -> tuple[np.ndarray, np.ndarray]:
    """A smoothly bending centre line with a slowly tapering, gently varying radius, walked until it
    leaves the box [0, extent_mm] (plus one step). Returns (points (N, 3) mm, radii (N,) mm)."""
    pts, radii = [np.asarray(start_mm, float)], [radius_mm]
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    r = radius_mm
    for _ in range(max_steps):
        # Direction drifts a little each step: vessels curve, they do not zig-zag.
        d = d + wiggle * rng.standard_normal(3)
        d /= np.linalg.norm(d)
        r = max(0.35, r * taper * (1.0 + 0.04 * rng.standard_normal()))
        p = pts[-1] + step_mm * d
        pts.append(p)
        radii.append(r)
        if np.any(p < -step_mm) or np.any(p > extent_mm + step_mm):
            break
    return np.stack(pts), np.asarray(radii)
