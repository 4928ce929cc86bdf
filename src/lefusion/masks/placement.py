"""DiffMask samples placed in a user's own scan: from the model's 1 mm box to the scan's grid.

DiffMask works in a fixed box of 1 mm voxels (:func:`~lefusion.masks.diffmask.model_box`). A
user's normal CT has its own spacing, origin and direction, and `lefusion generate` needs the mask
on exactly that grid. So the box is laid out in physical space around the requested centre, with
the scan's direction and 1 mm spacing; the boundary (e.g. the lung) is resampled into the box
(nearest neighbour; outside the scan counts as outside the boundary), the masks are sampled there
and resampled back onto the scan's grid (linear interpolation of the 0/1 mask, threshold 0.5,
which keeps the volume better than nearest neighbour when the spacings differ), and finally clipped
to the boundary on the scan's own grid, so every mask lies 100 % inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import Ancestral, SamplerConfig
from ..errors import LeFusionError
from ..io import Geometry, Volume
from .diffmask import SPACING_MM, Threshold, model_box, sample_masks


def _itk_image(shape_zyx: Sequence[int], geometry: Geometry, array: np.ndarray | None = None):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros(tuple(shape_zyx), np.float32) if array is None else array)
    image.SetSpacing(tuple(float(v) for v in reversed(geometry.spacing)))
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetDirection(tuple(float(v) for v in geometry.direction))
    return image


def box_geometry(reference: Volume, center_zyx: Sequence[float], box: Sequence[int]) -> Geometry:
    """Geometry of a DiffMask box (1 mm voxels, the reference's direction) whose voxel
    (D//2, H//2, W//2) sits on the reference's voxel `center_zyx` (continuous index, z, y, x).

    The box centre is an integer index so that, when the reference itself has 1 mm voxels and an
    integer centre, both grids coincide and resampling is exact.
    """
    image = _itk_image(reference.shape, reference.geometry)
    centre_xyz = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in reversed(center_zyx)))
    direction = np.asarray(reference.geometry.direction, dtype=np.float64).reshape(3, 3)
    offset_xyz = np.array([b // 2 for b in reversed(tuple(box))], dtype=np.float64) * np.array(list(reversed(SPACING_MM)))
    origin = np.asarray(centre_xyz) - direction @ offset_xyz
    return Geometry(spacing=SPACING_MM, origin=tuple(float(v) for v in origin), direction=reference.geometry.direction)


def resample(array: np.ndarray, source: Geometry, target: Geometry, target_shape: Sequence[int], linear: bool) -> np.ndarray:
    """Resample a (D, H, W) array from one grid to another (physical space; 0 outside the source).
    Linear interpolation returns float32, nearest neighbour keeps the dtype."""
    import SimpleITK as sitk

    moving = _itk_image(array.shape, source, np.ascontiguousarray(array.astype(np.float32) if linear else array))
    reference = _itk_image(target_shape, target)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(moving, reference, sitk.Transform(), interpolator, 0.0, moving.GetPixelID())
    return sitk.GetArrayFromImage(out)


def sample_masks_in_volume(
    model: DiffusionModel,
    reference: Volume,
    n: int,
    diameter_mm: float | Sequence[float],
    center_zyx: Sequence[float] | None = None,
    boundary: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    threshold: Threshold = "size",
    sampler: SamplerConfig = Ancestral(),
    attributes: dict[str, float] | None = None,
    guidance: float = 1.0,
) -> list[np.ndarray]:
    """`n` DiffMask masks on the grid of `reference` (a scan or its lung mask), bool (D, H, W) each.

    center_zyx: the lesion centre as a (continuous) voxel index of `reference` (default: its
    centre); diameter_mm: equivalent diameter(s) in mm; boundary: bool array on the reference
    grid that every mask stays inside; threshold: see :func:`~lefusion.masks.diffmask.postprocess`;
    attributes, guidance: shape ratings and guidance scale, as :func:`~lefusion.masks.diffmask.sample_masks`.
    Sample i is seeded `seed + i` as in
    :func:`~lefusion.masks.diffmask.sample_masks`. Raises LeFusionError when the centre lies
    outside the scan or outside the boundary.
    """
    shape = reference.shape
    centre = tuple(float(v) for v in (center_zyx if center_zyx is not None else [(s - 1) / 2.0 for s in shape]))
    if len(centre) != 3 or any(not (-0.5 <= c <= s - 0.5) for c, s in zip(centre, shape)):
        raise LeFusionError(f"centre {centre} (z, y, x voxels) lies outside the scan of shape {shape}")
    if boundary is not None:
        boundary = np.asarray(boundary, dtype=bool)
        if boundary.shape != shape:
            raise LeFusionError(f"boundary has shape {boundary.shape}, the scan {shape}")
        if not boundary[tuple(int(round(c)) for c in centre)]:
            raise LeFusionError(f"centre {centre} lies outside the boundary; choose a centre inside it")
    box = model_box(model)
    geometry = box_geometry(reference, centre, box)
    box_boundary = None
    if boundary is not None:
        box_boundary = resample(boundary.astype(np.uint8), reference.geometry, geometry, box, linear=False) > 0
    box_centre = tuple(float(b // 2) for b in box)
    masks = sample_masks(
        model,
        n,
        diameter_mm,
        box_centre,
        box_boundary,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        threshold=threshold,
        sampler=sampler,
        attributes=attributes,
        guidance=guidance,
    )
    out = []
    for mask in masks:
        placed = resample(mask.astype(np.float32), geometry, reference.geometry, shape, linear=True) >= 0.5
        out.append(placed & boundary if boundary is not None else placed)
    return out
