"""DiffMask's control region: the sphere (or ellipsoid) that tells the network a lesion's size,
centre and, for ellipsoids, its overall proportions.

A control region holds exactly k = round(pi/6 d^3 / voxel volume) voxels, d the requested
equivalent diameter (the diameter of the sphere of equal volume), centred on the requested centre:
the k lattice voxels nearest the centre under a metric. For a sphere the metric is Euclidean (in
mm); for an ellipsoid it is the Mahalanobis distance under a *form*, a 3x3 symmetric positive
definite matrix in mm^2 with determinant 1 (its eigenvectors are the ellipsoid's axes, the square
roots of its eigenvalues their relative lengths). The form of a mask is the second-moment matrix
of its voxels, normalised to determinant 1 (:func:`mask_form`), so an ellipsoid control region
has the lesion's volume, centroid, orientation and axis ratios, and the network only has to draw
the lesion's outline.

Why an ellipsoid (a change from the paper's sphere): a sphere tells the network nothing about
proportions, and a small network trained on CPU budgets answered a sphere with rounder lesions
than real nodules (median elongation 0.87 vs 0.81, flatness 0.76 vs 0.63 on LIDC;
docs/benchmarks.md). With an ellipsoid, sampling draws the form of a random training lesion, so
the proportions follow the real ones while the user still states only diameter and centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError

ControlKind = Literal["sphere", "ellipsoid"]
CONTROL_KINDS = ("sphere", "ellipsoid")
CONDITIONING = {
    "sphere": "equivalent-diameter sphere at centroid",
    "ellipsoid": "equivalent-diameter ellipsoid at centroid, shaped by the mask's second moments",
}
SPACING_MM = (1.0, 1.0, 1.0)


def control_region(
    shape: Sequence[int],
    center_zyx: Sequence[float],
    diameter_mm: float,
    spacing: Sequence[float] = SPACING_MM,
    form: np.ndarray | None = None,
) -> np.ndarray:
    """Bool (D, H, W) region of equivalent diameter `diameter_mm` centred at `center_zyx`.

    center_zyx: (z, y, x) in voxel index units (fractions allowed); spacing: (z, y, x) mm; form:
    None for a sphere, else a (3, 3) SPD matrix (mm^2, normalised here to determinant 1) for an
    ellipsoid. The region is the k = round(pi/6 d^3 / voxel volume) lattice voxels nearest the
    centre (ties broken in point-symmetric pairs so the centroid stays on the centre), chosen on an
    unbounded lattice and then clipped by the array, so its volume is exact unless it leaves the
    array. d = 0 gives an empty mask. Raises LeFusionError for a negative diameter, arguments that
    are not 3D or a form that is not symmetric positive definite.
    """
    shape = tuple(int(v) for v in shape)
    centre = np.asarray(center_zyx, dtype=np.float64)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if len(shape) != 3 or centre.shape != (3,) or spacing_arr.shape != (3,):
        raise LeFusionError("shape, center_zyx and spacing must each have 3 entries (z, y, x)")
    if not np.isfinite(diameter_mm) or diameter_mm < 0:
        raise LeFusionError(f"diameter_mm must be a finite number >= 0, got {diameter_mm}")
    metric, stretch = np.eye(3), 1.0
    if form is not None:
        metric, stretch = _metric(form)
    out = np.zeros(shape, dtype=bool)
    k = int(round(np.pi / 6.0 * float(diameter_mm) ** 3 / float(spacing_arr.prod())))
    if k == 0:
        return out
    half = np.ceil(stretch * diameter_mm / 2.0 / spacing_arr).astype(int) + 2  # window holding >= k voxels
    first = np.round(centre).astype(int) - half
    axes = [np.arange(f, f + 2 * h + 1) for f, h in zip(first, half)]
    grids = np.meshgrid(*axes, indexing="ij")
    offsets = np.stack([((g - c) * s).ravel() for g, c, s in zip(grids, centre, spacing_arr)], axis=1)  # (M, 3) mm
    dist2 = np.round(np.einsum("mi,ij,mj->m", offsets, metric, offsets), 9)  # rounded so that equal distances tie exactly
    order = np.argsort(dist2, kind="stable")
    cut = dist2[order[k - 1]]
    full = order[dist2[order] < cut]  # complete shells nearer than the k-th voxel
    shell = order[dist2[order] == cut]
    # The last shell is only partly used. Its voxels are taken alternately from the two ends of
    # their order along a direction with rationally independent components (no two lattice
    # offsets project equally): about a centre on the half-voxel grid these are point-symmetric
    # pairs, so the index order cannot pull the centroid off the requested centre.
    proj = np.argsort(offsets[shell] @ np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)]), kind="stable")
    ends = np.empty_like(proj)
    ends[0::2], ends[1::2] = proj[: (len(proj) + 1) // 2], proj[::-1][: len(proj) // 2]
    chosen = np.concatenate((full, shell[ends[: k - len(full)]]))
    idx = np.stack(np.unravel_index(chosen, grids[0].shape), axis=1) + first
    inside = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    out[tuple(idx[inside].T)] = True
    return out


def _metric(form: np.ndarray) -> tuple[np.ndarray, float]:
    """Form (3, 3) -> (inverse of the determinant-1 form, longest semi-axis relative to a sphere's)."""
    form = np.asarray(form, dtype=np.float64)
    if form.shape != (3, 3) or not np.allclose(form, form.T, atol=1e-8):
        raise LeFusionError(f"an ellipsoid form must be a symmetric 3x3 matrix, got {form.tolist()}")
    eig = np.linalg.eigvalsh(form)
    if not np.all(np.isfinite(eig)) or eig[0] <= 0:
        raise LeFusionError(f"an ellipsoid form must be positive definite, got eigenvalues {eig.tolist()}")
    scale = float(np.prod(eig)) ** (1.0 / 3.0)
    return np.linalg.inv(form / scale), float(np.sqrt(eig[-1] / scale))


def mask_form(mask: np.ndarray, spacing: Sequence[float] = SPACING_MM) -> np.ndarray:
    """Second-moment form (3, 3) of a non-empty bool mask (D, H, W), determinant 1.

    The covariance of the voxel centres in mm plus each voxel's own extent (a uniform box of
    variance spacing^2 / 12 per axis), which keeps one-slice or one-voxel masks non-singular.
    """
    idx = np.argwhere(np.asarray(mask, dtype=bool)).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(idx) == 0:
        raise LeFusionError("mask_form needs a non-empty mask")
    cov = np.cov(idx, rowvar=False, bias=True) if len(idx) > 1 else np.zeros((3, 3))
    cov = cov + np.diag(np.asarray(spacing, dtype=np.float64) ** 2 / 12.0)
    return cov / float(np.linalg.det(cov)) ** (1.0 / 3.0)


def mask_control(mask: np.ndarray, kind: ControlKind = "sphere", spacing: Sequence[float] = SPACING_MM) -> np.ndarray:
    """The control region of a training mask (D, H, W): same voxel count, centred at its
    centroid, a sphere or the ellipsoid of the mask's own form. Empty mask -> empty region."""
    if kind not in CONTROL_KINDS:
        raise LeFusionError(f"control kind must be one of {CONTROL_KINDS}, got {kind!r}")
    mask = np.asarray(mask, dtype=bool)
    count = int(mask.sum())
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    diameter = (6.0 * count * float(np.prod(spacing)) / np.pi) ** (1.0 / 3.0)
    form = mask_form(mask, spacing) if kind == "ellipsoid" else None
    return control_region(mask.shape, ndimage.center_of_mass(mask), diameter, spacing, form)


def pack_forms(forms: Sequence[np.ndarray]) -> list[list[float]]:
    """Forms (3, 3) -> rows [zz, yy, xx, zy, zx, yx] rounded to 5 decimals (for a checkpoint's JSON)."""
    return [[round(float(f[i, j]), 5) for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))] for f in forms]


def unpack_form(row: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`pack_forms` for one row."""
    zz, yy, xx, zy, zx, yx = (float(v) for v in row)
    return np.array([[zz, zy, zx], [zy, yy, yx], [zx, yx, xx]])
