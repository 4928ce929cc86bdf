"""Voxel grids in physical space: index <-> world coordinates, and sampling an array at world points.

A grid is a `Geometry` (spacing (z, y, x) mm; origin (x, y, z) mm and row-major 3x3 direction in
ITK order) plus a shape (D, H, W). A voxel with index (k, j, i) = (z, y, x) sits at

    p = origin + direction @ (spacing_xyz * (i, j, k))          (ITK's index-to-physical rule)

Sampling uses scipy's `map_coordinates` (order 0 nearest, 1 linear, 3 cubic B-spline) on just the
points asked for, so a box is cut from a 512 x 512 x 400 scan without resampling the scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..io import Geometry


def _matrix(geometry: Geometry) -> np.ndarray:
    """(3, 3) map from an (x, y, z) index offset to a physical offset in mm: direction @ diag(spacing_xyz)."""
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    return direction @ np.diag(np.asarray(geometry.spacing, dtype=np.float64)[::-1])


def index_to_world(geometry: Geometry, index_zyx: np.ndarray) -> np.ndarray:
    """(..., 3) continuous (z, y, x) indices -> (..., 3) physical points (x, y, z) in mm."""
    index_xyz = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]
    return index_xyz @ _matrix(geometry).T + np.asarray(geometry.origin, dtype=np.float64)


def world_to_index(geometry: Geometry, points_xyz: np.ndarray) -> np.ndarray:
    """(..., 3) physical points (x, y, z) mm -> (..., 3) continuous (z, y, x) indices."""
    offset = np.asarray(points_xyz, dtype=np.float64) - np.asarray(geometry.origin, dtype=np.float64)
    index_xyz = offset @ np.linalg.inv(_matrix(geometry)).T
    return index_xyz[..., ::-1]


def grid_indices(shape: Sequence[int]) -> np.ndarray:
    """(D, H, W, 3) integer (z, y, x) indices of every voxel of a grid of `shape`, as float64."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)


def inside(shape: Sequence[int], index_zyx: np.ndarray) -> np.ndarray:
    """(...,) bool: the continuous indices lie within the grid's voxels (half a voxel past the outer centres)."""
    index = np.asarray(index_zyx)
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    return np.all((index >= -0.5) & (index <= upper), axis=-1)


def sample(array: np.ndarray, index_zyx: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a (D, H, W) array at continuous (..., 3) (z, y, x) indices, float64, shape (...).

    Points within half a voxel outside take the nearest edge value ("nearest" extension); the caller
    marks points outside the grid with `inside`. order: 0 nearest, 1 linear (exact at integer
    indices), 3 cubic B-spline (smoother, may overshoot at edges).
    """
    out_shape = np.shape(index_zyx)[:-1]
    coords = np.moveaxis(np.asarray(index_zyx, dtype=np.float64), -1, 0).reshape(3, -1)
    if coords.shape[1] == 0:
        return np.zeros(out_shape)
    size = np.asarray(array.shape)[:, None]
    if order == 0:  # map_coordinates rounds half-way points inconsistently; do nearest explicitly
        idx = np.clip(np.rint(coords).astype(np.int64), 0, size - 1)
        return np.asarray(array)[tuple(idx)].astype(np.float64).reshape(out_shape)
    # Only the part of the array the points touch is converted (and, for B-splines, prefiltered):
    # a whole scan in float64 would cost gigabytes for a box of a few thousand voxels.
    margin = order + 2
    lo = np.clip(np.floor(coords.min(axis=1)).astype(int) - margin, 0, size[:, 0] - 1)
    hi = np.clip(np.ceil(coords.max(axis=1)).astype(int) + margin + 1, lo + 1, size[:, 0])
    crop = np.asarray(array[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float64)
    clipped = np.clip(coords, 0, size - 1) - lo[:, None]  # "nearest" extension beyond the edge voxels
    values = ndimage.map_coordinates(crop, clipped, order=order, mode="nearest", prefilter=order > 1)
    return values.reshape(out_shape)
