"""Chest phantom, part 4: the vessel and airway trees inside the lungs (canonical grid, see chest_body).

Each lung gets a pulmonary-artery tree from the hilar end of its pulmonary artery, with a bronchus
running beside every branch wide enough to show one (a bronchovascular bundle), and pulmonary-vein
trees from the hilar ends of its two veins. Trees fill the lung by splitting territories: points
are scattered through the lung (one per ~7 mm cube); a branch heads for the centroid of the points
it supplies, stops part of the way, and splits its points in two across their longest axis; each
child's radius follows Murray's law with flow proportional to its share (r_i = r (n_i / n)^(1/3)),
so vessels thin from ~8 mm at the hilum to ~0.5 mm at the periphery, where they end a few mm
under the pleura. Vessels are blood (~40 HU), which partial volume makes fainter as they thin;
bronchi are air inside a soft-tissue wall about a fifth of the lumen radius thick.
"""

from __future__ import annotations

import numpy as np

from .chest_body import HU, Canvas
from .chest_labels import LUNG_LEFT, LUNG_RIGHT
from .chest_thorax import Root
from .noise import soft_occupancy, tube_sdf

Segment = tuple[np.ndarray, np.ndarray, float, float]  # start, end (mm, z y x), radius at start, at end
TERRITORY_MM = 7.0


def lung_points(rng: np.random.Generator, inside: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Points (mm, z y x) scattered through a lung: one per TERRITORY_MM cube, jittered inside it."""
    step = np.array([max(1, round(TERRITORY_MM / s)) for s in spacing])
    idx = np.argwhere(inside[:: step[0], :: step[1], :: step[2]]).astype(float)
    cell = step * np.asarray(spacing)
    return idx * cell + rng.uniform(-0.4, 0.4, idx.shape) * cell


def grow_tree(rng: np.random.Generator, root: Root, points: np.ndarray, r_min: float) -> list[Segment]:
    """Branch segments (parents before children) of a tree from `root` supplying `points`."""
    segments: list[Segment] = []
    stack = [(np.asarray(root.point, float), np.arange(len(points)), float(root.radius))]
    while stack:
        p, idx, r = stack.pop()
        pts = points[idx]
        c = pts.mean(axis=0)
        if len(idx) < 3 or r < 1.4 * r_min:
            segments.append((p, c, r, 0.9 * r))  # a terminal twig into its territory
            continue
        q = p + rng.uniform(0.3, 0.55) * (c - p)
        segments.append((p, q, r, 0.97 * r))
        rel = pts - c
        axis = np.linalg.eigh(rel.T @ rel)[1][:, -1]
        proj = rel @ axis
        cut = np.quantile(proj, rng.uniform(0.3, 0.7))
        for part in (idx[proj < cut], idx[proj >= cut]):
            if len(part):
                stack.append((q, part, 0.97 * r * (len(part) / len(idx)) ** (1 / 3)))
    return segments


def _bronchi(segments: list[Segment], start: np.ndarray, r_start: float, r_min: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """A bronchus beside each artery branch (lumen 0.8 x the artery radius) while it is wide enough:
    the centre line is the branch shifted sideways by both radii and the wall, so artery and
    bronchus touch. Each bronchus starts where its parent ended, so the airway stays connected."""
    ends: dict[bytes, np.ndarray] = {}
    lines = []
    for k, (p, q, r0, r1) in enumerate(segments):
        lumen0, lumen1 = 0.8 * r0, 0.8 * r1
        if lumen1 < r_min:
            continue
        d = (q - p) / (np.linalg.norm(q - p) + 1e-9)
        ref = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        side = np.cross(d, ref)
        side /= np.linalg.norm(side)
        shift = r1 + lumen1 * 1.2 + 0.3
        a = ends.get(p.tobytes(), start if k == 0 else None)
        if a is None:
            continue
        b = q + side * shift
        ends[q.tobytes()] = b
        lines.append((np.stack([a, b]), np.array([r_start if k == 0 else lumen0, lumen1])))
    return lines


def paint_trees(canvas: Canvas, roots: list[Root], rng: np.random.Generator) -> dict:
    """Grow and draw every tree. Drawing is limited to the lungs and the hila (25 mm round each
    root), so nothing reaches into the chest wall. Returns segment counts per kind."""
    spacing = canvas.spacing
    fine = float(min(spacing))
    r_vessel = max(0.4, 0.3 * fine)
    r_airway = max(0.9, 0.45 * float(max(spacing[1:])))
    vessels: list[tuple[np.ndarray, np.ndarray]] = []
    airways: list[tuple[np.ndarray, np.ndarray]] = []
    counts = {"artery": 0, "vein": 0, "airway": 0}
    for side, ids in (("right", LUNG_RIGHT), ("left", LUNG_LEFT)):
        points = lung_points(rng, np.isin(canvas.labels, ids), spacing)
        side_roots = [r for r in roots if r.side == side]
        bronchus = next(r for r in side_roots if r.kind == "airway")
        veins = [r for r in side_roots if r.kind == "vein"]
        # Each vein drains the points nearer to it than to the other vein.
        owner = np.argmin([np.linalg.norm(points - v.point, axis=1) for v in veins], axis=0) if veins else None
        for root in side_roots:
            if root.kind == "airway":
                continue
            mine = points if root.kind == "artery" else points[owner == veins.index(root)]
            if not len(mine):
                continue
            segs = grow_tree(rng, root, mine, r_vessel)
            counts[root.kind] += len(segs)
            vessels += [(np.stack([p, q]), np.array([r0, r1])) for p, q, r0, r1 in segs]
            if root.kind == "artery":
                lines = _bronchi(segs, bronchus.point, bronchus.radius, r_airway)
                counts["airway"] += len(lines)
                airways += lines
    allowed = np.isin(canvas.labels, LUNG_LEFT + LUNG_RIGHT)
    for root in roots:
        box = canvas.box(root.point - 25.0, root.point + 25.0)
        bz, by, bx = canvas.grid(box)
        near = (bz - root.point[0]) ** 2 + (by - root.point[1]) ** 2 + (bx - root.point[2]) ** 2 < 625.0
        allowed[box] |= near
    edge = np.float32(max(0.2, 0.3 * fine))
    walls = [(p, r * 1.2 + 0.3) for p, r in airways]
    for lines, value in ((vessels, rng.uniform(36, 48)), (walls, 45.0), (airways, HU["air"])):
        sdf = tube_sdf(canvas.shape, spacing, lines)
        sel = np.nonzero((sdf < 8 * edge) & allowed)
        hu = canvas.hu[sel]
        canvas.hu[sel] = hu + soft_occupancy(sdf[sel], edge) * (np.float32(value) - hu)
    return counts
