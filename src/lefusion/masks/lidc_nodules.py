"""From one LIDC scan's annotations to nodules: group readers, consensus, crop at 1 mm isotropic.

A nodule is the group of up to four readers' annotations of one lesion. Masks are built on the
scan's native grid (slice, row, col), the consensus is taken there (voxels marked by >= 50% of
the nodule's readers, as pylidc's ``consensus(clevel=0.5)``), and every mask is then resampled to
a fixed 1 mm box centred on the consensus centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.csgraph import connected_components

from .lidc_db import RATINGS, ScanRecord
from .lidc_raster import NativeMask, paste, rasterise_annotation, resample_shape

MAX_READERS = 4  # LIDC-IDRI: four thoracic radiologists read every scan


@dataclass
class Nodule:
    """consensus: bool (D, H, W) at 1 mm; readers: uint8 (D, H, W), bit i set where the nodule's
    i-th annotation (ascending annotation id) marks the voxel; meta: one table row."""

    consensus: np.ndarray
    readers: np.ndarray
    meta: dict


def group_annotations(
    centroids: np.ndarray,
    diameters: np.ndarray,
    overlap: np.ndarray,
    tau: float = 0.5,
    max_readers: int = MAX_READERS,
    factor: float = 0.9,
) -> list[list[int]]:
    """Cluster one scan's annotations into nodules.

    centroids: (A, 3) mm; diameters: (A,) equivalent diameters in mm; overlap: (A, A) bool, True
    where two masks share a voxel. Two annotations are linked when their masks overlap or their
    centroids are closer than ``tau`` x their mean diameter (same lesion seen by two readers);
    nodules are the connected components. The database keeps no reader identity, so "at most one
    annotation per reader" is enforced as "at most ``max_readers`` per nodule": a larger component
    (nearby lesions chained together) is re-clustered on centroid distance alone with ``tau``
    shrinking by ``factor`` until every part is small enough (pylidc does the same with its
    contour distance). Returns lists of indices, each ascending, ordered by first index.
    """
    n = len(centroids)
    if n == 0:
        return []
    dist = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    ratio = dist / np.maximum(0.5 * (diameters[:, None] + diameters[None]), 1e-6)
    groups: list[list[int]] = []
    pending = [(np.arange(n), tau, True)]
    while pending:
        idx, t, use_overlap = pending.pop()
        adj = ratio[np.ix_(idx, idx)] <= t
        if use_overlap:
            adj |= overlap[np.ix_(idx, idx)]
        _, labels = connected_components(adj, directed=False)
        for lab in np.unique(labels):
            part = idx[labels == lab]
            if len(part) <= max_readers or t < 1e-3:
                groups.append(sorted(part.tolist()))
            else:
                pending.append((part, t * factor, False))
    return sorted(groups, key=lambda g: g[0])


def consensus(readers: np.ndarray, level: float = 0.5) -> np.ndarray:
    """(R, ...) bool reader masks -> bool mask of voxels marked by at least ``level`` of the R
    readers (>= 50%: 1 of 1, 1 of 2, 2 of 3, 2 of 4)."""
    count = readers.sum(axis=0)
    return count >= level * readers.shape[0] - 1e-9


def _overlaps(a: NativeMask, b: NativeMask) -> bool:
    lo = np.maximum(a.offset, b.offset)
    hi = np.minimum(np.add(a.offset, a.mask.shape), np.add(b.offset, b.mask.shape))
    if (hi <= lo).any():
        return False
    shape = tuple(int(v) for v in hi - lo)
    window = tuple(int(v) for v in lo)
    return bool((paste(a, window, shape) & paste(b, window, shape)).any())


def _ratings(meta: dict, ratings: list[dict[str, int]]) -> None:
    for name in RATINGS:
        values = [r[name] for r in ratings if r.get(name) is not None]
        meta[name] = float(np.median(values)) if values else float("nan")  # median over readers
        meta[f"{name}_readers"] = ";".join(str(v) for v in values)


@dataclass(frozen=True)
class _ScanGrid:
    """A scan's native sampling: slice positions z (S,) mm, per-slice slab thickness (S,) mm (half
    the distance to each neighbour: LIDC slices can overlap or have gaps) and square pixels."""

    z: np.ndarray
    slab: np.ndarray
    pixel_mm: float

    def z_at(self, k: np.ndarray) -> np.ndarray:
        """Slice positions of indices k, extrapolated by one slab beyond the first / last slice."""
        z, slab, k = self.z, self.slab, np.asarray(k)
        below = z[0] + k * slab[0]
        above = z[-1] + (k - len(z) + 1) * slab[-1]
        return np.where(k < 0, below, np.where(k >= len(z), above, z[np.clip(k, 0, len(z) - 1)]))

    def positions(self, offset: tuple[int, ...], shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """Per-axis sample positions (mm) of a window: ((nk,), (nr,), (nc,))."""
        k0, r0, c0 = offset
        nk, nr, nc = shape
        ps = self.pixel_mm
        return self.z_at(k0 + np.arange(nk)), (r0 + np.arange(nr)) * ps, (c0 + np.arange(nc)) * ps

    def volume_and_centroid(self, m: NativeMask) -> tuple[float, np.ndarray]:
        """Volume (mm^3) and centroid (z, y, x) in mm of a non-empty native mask."""
        pz, py, px = self.positions(m.offset, m.mask.shape)
        k, r, c = np.nonzero(m.mask)
        w = self.slab[m.offset[0] + k] * self.pixel_mm**2  # voxel volumes, mm^3
        return float(w.sum()), np.array([(w * pz[k]).sum(), (w * py[r]).sum(), (w * px[c]).sum()]) / w.sum()


def _to_box(grid: _ScanGrid, mask: NativeMask, centroid: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """Resample a native mask onto the 1 mm box centred on ``centroid`` (z, y, x mm): bool (D, H, W).

    The resampling covers the whole window on the box's voxel lattice, so the volume-matching
    step sees the full nodule even when it is larger than the box; then it is cropped."""
    src = grid.positions(mask.offset, mask.mask.shape)
    first = [c - (n - 1) / 2.0 for c, n in zip(centroid, box)]  # box voxel 0 position, mm
    start = [int(np.floor(s[0] - f)) for s, f in zip(src, first)]  # window lattice, box index units
    stop = [int(np.ceil(s[-1] - f)) + 1 for s, f in zip(src, first)]
    dst = tuple(f + np.arange(a, b) for f, a, b in zip(first, start, stop))
    keep = int(round(grid.volume_and_centroid(mask)[0])) if mask.mask.any() else 0  # 1 mm^3 voxels
    values = resample_shape(mask.mask, src, dst, grid.pixel_mm, keep_voxels=keep)
    lo = [max(a, 0) for a in start]
    hi = [max(low, min(b, n)) for low, b, n in zip(lo, stop, box)]
    out = np.zeros(box, dtype=bool)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = values[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))]
    return out


def extract_nodules(scan: ScanRecord, box: tuple[int, int, int], min_diameter_mm: float) -> tuple[list[Nodule], dict]:
    """All nodules of one scan whose consensus equivalent diameter is >= ``min_diameter_mm``.

    box: (D, H, W) output size in 1 mm voxels, axes (z, row, col) of the scan. Returns the nodules
    and counters {'annotations', 'empty_annotations', 'groups', 'small', 'empty_consensus'}.
    """
    z = scan.slice_z
    grid = _ScanGrid(z, np.gradient(z) if len(z) > 1 else np.ones(1), scan.pixel_spacing)
    natives, kept = [], []
    for ann in scan.annotations:
        native = rasterise_annotation(ann.contours, z)
        if native.mask.any():
            natives.append(native)
            kept.append(ann)
    stats = {
        "annotations": len(scan.annotations),
        "empty_annotations": len(scan.annotations) - len(kept),
        "groups": 0,
        "small": 0,
        "empty_consensus": 0,
    }

    vc = [grid.volume_and_centroid(m) for m in natives]
    diam = np.array([(6.0 * v / np.pi) ** (1 / 3) for v, _ in vc])
    cent = np.array([c for _, c in vc]).reshape(-1, 3)
    overlap = np.array([[i != j and _overlaps(a, b) for j, b in enumerate(natives)] for i, a in enumerate(natives)])
    groups = group_annotations(cent, diam, overlap.reshape(len(natives), len(natives)))
    stats["groups"] = len(groups)

    nodules = []
    for group in groups:
        members = [natives[i] for i in group]
        # One empty slice and two empty pixels around the nodule: the signed distance needs them.
        lo = np.min([m.offset for m in members], axis=0) - (1, 2, 2)
        hi = np.max([np.add(m.offset, m.mask.shape) for m in members], axis=0) + (1, 2, 2)
        window, shape = tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo)
        readers = np.stack([paste(m, window, shape) for m in members])  # (R, nk, nr, nc)
        cons = NativeMask(consensus(readers), window)
        if not cons.mask.any():
            stats["empty_consensus"] += 1
            continue
        volume, centroid = grid.volume_and_centroid(cons)
        eq_diam = (6.0 * volume / np.pi) ** (1 / 3)
        if eq_diam < min_diameter_mm:
            stats["small"] += 1
            continue
        cons_box = _to_box(grid, cons, centroid, box)
        bits = np.zeros(box, dtype=np.uint8)
        for i, reader in enumerate(readers):
            bits |= _to_box(grid, NativeMask(reader, window), centroid, box).astype(np.uint8) << i
        border = cons_box.copy()
        border[1:-1, 1:-1, 1:-1] = False
        ps = scan.pixel_spacing
        meta = {
            "scan_id": scan.id,
            "patient_id": scan.patient_id,
            "series_uid": scan.series_uid,
            "annotation_ids": ";".join(str(kept[i].id) for i in group),
            "n_readers": len(group),
            "pixel_spacing_mm": ps,
            "slice_spacing_mm": float(np.median(np.diff(z))) if len(z) > 1 else float("nan"),
            "slice_thickness_mm": scan.slice_thickness,
            "centroid_z_mm": float(centroid[0]),
            "centroid_row": float(centroid[1] / ps),
            "centroid_col": float(centroid[2] / ps),
            "volume_mm3": volume,
            "equivalent_diameter_mm": float(eq_diam),
            "volume_box_mm3": float(cons_box.sum()),
            "touches_border": bool(border.any()),
        }
        _ratings(meta, [kept[i].ratings for i in group])
        nodules.append(Nodule(cons_box, bits, meta))
    return nodules, stats
