"""Shape descriptors of 3D lesion masks and a distance between two sets of masks.

Used to ask whether synthetic masks (DiffMask, hand-crafted) look like real nodules: compute
:func:`shape_descriptors` for every mask of each set, then :func:`shape_distance` between the
sets. Definitions follow PyRadiomics' shape features (van Griethuysen et al. 2017) where it has
one. The surface is a marching-cubes mesh (scikit-image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.stats import wasserstein_distance

from ..errors import LeFusionError

DESCRIPTORS = (
    "volume_mm3",
    "equivalent_diameter_mm",
    "surface_area_mm2",
    "sphericity",
    "elongation",
    "flatness",
    "extent",
    "solidity",
    "component_count",
)


def equivalent_diameter_mm(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Diameter in mm of the sphere with the mask's volume, (6 V / pi)^(1/3); no mesh, so cheap."""
    volume = float(np.count_nonzero(mask)) * float(np.prod(spacing))
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def _mesh(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    try:
        from skimage.measure import marching_cubes
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise LeFusionError("shape descriptors need scikit-image: pip install scikit-image") from exc
    # Pad so objects touching the array border still give a closed surface.
    verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), level=0.5, spacing=spacing)
    return verts, faces


def _mesh_area_volume(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1).sum()
    # Divergence theorem: signed tetrahedra from the origin; the mesh is closed (padded).
    volume = abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0
    return float(area), float(volume)


def shape_descriptors(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Shape descriptors of one 3D mask.

    mask: (D, H, W) bool / 0-1, axes (z, y, x); spacing: (z, y, x) voxel size in mm.
    Returns a dict with the keys of ``DESCRIPTORS``:

    - volume_mm3: voxel count x voxel volume; equivalent_diameter_mm: (6 V / pi)^(1/3)
    - surface_area_mm2: area of the marching-cubes mesh at level 0.5
    - sphericity: (36 pi V_mesh^2)^(1/3) / area, with V_mesh the mesh's enclosed volume (PyRadiomics)
    - elongation, flatness: sqrt(lambda_minor / lambda_major), sqrt(lambda_least / lambda_major) of
      the covariance of the voxel-centre coordinates in mm (PyRadiomics); 1 for a sphere
    - extent: voxel volume / axis-aligned bounding-box volume
    - solidity: V_mesh / volume of the convex hull of the mesh vertices (1 for convex shapes;
      mesh-based so that a voxelised sphere scores ~1, not the ~0.9 of voxels vs. corner hull)
    - component_count: connected components, 26-connectivity
    Raises LeFusionError for an empty mask or a mask that is not 3D.
    """
    mask = np.asarray(mask).astype(bool)
    spacing = tuple(float(s) for s in spacing)
    if mask.ndim != 3 or len(spacing) != 3:
        raise LeFusionError(f"shape descriptors need a 3D mask and 3 spacings, got {mask.shape} and {spacing}")
    count = int(mask.sum())
    if count == 0:
        raise LeFusionError("shape descriptors of an empty mask are undefined")
    volume = count * float(np.prod(spacing))
    verts, faces = _mesh(mask, spacing)
    area, mesh_volume = _mesh_area_volume(verts, faces)

    coords = np.argwhere(mask) * np.asarray(spacing)  # (N, 3) voxel centres, mm
    eig = np.sort(np.linalg.eigvalsh(np.cov(coords, rowvar=False, bias=True))) if count > 1 else np.zeros(3)
    least, minor, major = np.clip(eig, 0.0, None)
    elongation = float(np.sqrt(minor / major)) if major > 0 else 1.0
    flatness = float(np.sqrt(least / major)) if major > 0 else 1.0

    lo, hi = np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0)
    extent = count / float(np.prod(hi - lo + 1))
    try:
        hull_volume = ConvexHull(verts).volume
    except Exception:  # qhull fails on degenerate (flat) vertex sets, which tiny masks can give
        hull_volume = mesh_volume
    _, components = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return {
        "volume_mm3": volume,
        "equivalent_diameter_mm": float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
        "surface_area_mm2": area,
        "sphericity": float((36.0 * np.pi * mesh_volume**2) ** (1.0 / 3.0) / area),
        "elongation": elongation,
        "flatness": flatness,
        "extent": float(extent),
        "solidity": float(min(mesh_volume / hull_volume, 1.0)) if hull_volume > 0 else 1.0,
        "component_count": float(components),
    }


IRREGULARITY = ("radial_cv", "opening_loss", "hull_area_ratio")
_CROSS = ndimage.generate_binary_structure(3, 1)


def irregularity_descriptors(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Outline irregularity of one 3D mask (what spiculation and lobulation ratings describe), keys
    of ``IRREGULARITY``; mask (D, H, W), spacing (z, y, x) mm as :func:`shape_descriptors`.

    - radial_cv: std / mean of the distances (mm) from the voxel centroid to the marching-cubes
      surface vertices; 0 for a sphere, larger for lobes and spicules
    - opening_loss: fraction of the voxels a morphological opening with the 6-neighbour cross
      removes: thin protrusions (spicules, strands) one or two voxels wide
    - hull_area_ratio: mesh surface area / area of its convex hull (>= ~1; folds and spikes add
      surface the hull does not have)
    Raises LeFusionError for an empty mask.
    """
    mask = np.asarray(mask).astype(bool)
    spacing = tuple(float(s) for s in spacing)
    if mask.ndim != 3 or not mask.any():
        raise LeFusionError(f"irregularity descriptors need a non-empty 3D mask, got shape {mask.shape}")
    verts, faces = _mesh(mask, spacing)
    area, _ = _mesh_area_volume(verts, faces)
    centroid = (np.argwhere(mask) + 1) * np.asarray(spacing)  # +1: the mesh is of the padded mask
    radii = np.linalg.norm(verts - centroid.mean(axis=0), axis=1)
    opened = ndimage.binary_opening(np.pad(mask, 1), structure=_CROSS)[1:-1, 1:-1, 1:-1]
    try:
        hull_area = ConvexHull(verts).area
    except Exception:  # degenerate (flat) vertex sets of tiny masks
        hull_area = area
    return {
        "radial_cv": float(radii.std() / radii.mean()) if radii.mean() > 0 else 0.0,
        "opening_loss": float(1.0 - opened.sum() / mask.sum()),
        "hull_area_ratio": float(area / hull_area) if hull_area > 0 else 1.0,
    }


def shape_distance(
    set_a: Sequence[dict[str, float]],
    set_b: Sequence[dict[str, float]],
    reference: Sequence[dict[str, float]] | None = None,
    keys: Sequence[str] = DESCRIPTORS,
) -> dict[str, float]:
    """How far two sets of masks are apart in shape, descriptor by descriptor.

    set_a, set_b: lists of :func:`shape_descriptors` dicts; reference: the set whose spread sets
    the scale (default ``set_a``, e.g. the real nodules). For each key: the 1-D Wasserstein
    distance between the two sets' values divided by the reference's standard deviation (so
    "1.0" means "shifted by one real-data standard deviation"). A descriptor constant over the
    reference (std 0, e.g. component_count always 1) is left unnormalised. ``score``: the mean over
    keys. 0 for identical sets. Raises LeFusionError for an empty set or a missing key.
    """
    reference = set_a if reference is None else reference
    if not set_a or not set_b or not reference:
        raise LeFusionError("shape_distance needs non-empty sets of descriptors")
    out: dict[str, float] = {}
    for key in keys:
        try:
            a = np.array([d[key] for d in set_a], dtype=np.float64)
            b = np.array([d[key] for d in set_b], dtype=np.float64)
            ref = np.array([d[key] for d in reference], dtype=np.float64)
        except KeyError as exc:
            raise LeFusionError(f"descriptor {exc} missing from a shape_descriptors dict") from exc
        scale = float(ref.std())
        out[key] = float(wasserstein_distance(a, b)) / (scale if scale > 1e-12 else 1.0)
    out["score"] = float(np.mean([out[k] for k in keys]))
    return out
