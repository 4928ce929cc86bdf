"""Chest phantom, part 3: what fills the pleural cavity (canonical grid, see chest_body).

The mediastinum is a smooth union of its structures, each with a rim of fat: heart in its
pericardial fat, aorta (ascending, arch, descending) with the arch's three branches, superior vena
cava and left brachiocephalic vein, pulmonary trunk and arteries, pulmonary veins, trachea and main
bronchi (air with a wall), esophagus, the spinal column, and a thin band along the midline (the
anterior and posterior junction lines). The lungs are the cavity minus the mediastinum, above the
diaphragm (two domes, the right higher, deepest in the posterior costophrenic recesses) and below
an apical cap; each lung is split into lobes by an oblique fissure (and, on the right, the
horizontal one). Below the diaphragm: liver, stomach (fluid, often a gas bubble in front), spleen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chest_body import HU, Canvas, Subject, spine_at
from .chest_labels import ORGAN_LABELS
from .noise import ellipsoid_sdf, fractal_field, smooth_field, tube_sdf


@dataclass(frozen=True, eq=False)
class Root:
    """Where a tree inside a lung starts: the end of an extrapulmonary stem at the hilum (mm, z, y, x)."""

    side: str  # "right" | "left"
    kind: str  # "airway" (radius = lumen) | "artery" | "vein"
    point: np.ndarray
    direction: np.ndarray
    radius: float


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two distance fields (blend width k mm): a union without creases."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - np.float32(k) * h * (1 - h)


def _tube(points, radii) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(points, dtype=float), np.asarray(radii, dtype=float)


def mediastinal_tubes(s: Subject, rng: np.random.Generator) -> tuple[dict, list[Root], dict]:
    """Centre lines (mm, z y x) and radii of the tubular mediastinal structures, the hilar roots of
    the lung trees, and the heart's ellipsoid. Positions follow the spine, the carina (at the T4/T5
    disc) and the domes, so they move with the subject."""
    sz = s.size
    tops = {lv[2]: lv[0] for lv in s.levels}
    z_car = tops.get(ORGAN_LABELS["vertebrae_T5"], s.z_apex - 80) + rng.uniform(-4, 6)
    xs, ys, _, b = (float(v) for v in spine_at(s, np.float32(z_car)))
    top = s.fov[0] + 5.0
    r_tr = sz * rng.uniform(9.5, 12)
    xt, yt = s.cx + rng.uniform(-5, 1), ys - b - 9 * sz - r_tr - 2
    car = np.array([z_car, yt, xt])
    tubes: dict[str, tuple] = {}
    tubes["trachea"] = _tube([[top, yt - 14, xt], [z_car + 40, yt - 4, xt], car], [r_tr] * 3)
    right_end = car + sz * np.array([-18.0, 6.0, -24.0])
    left_end = car + sz * np.array([-26.0, 12.0, 44.0])
    tubes["bronchus_right"] = _tube([car, right_end], [0.72 * r_tr, 0.62 * r_tr])
    tubes["bronchus_left"] = _tube([car, left_end], [0.62 * r_tr, 0.55 * r_tr])

    heart_c = np.array([s.z_dome[1] + sz * rng.uniform(38, 50), s.cy - s.body_b[0] + sz * rng.uniform(78, 92), s.cx + rng.uniform(14, 28)])
    long = np.array([-0.53, -0.55, 0.64]) + rng.uniform(-0.1, 0.1, 3)
    long /= np.linalg.norm(long)
    second = np.cross(long, [1.0, 0.0, 0.0])
    second /= np.linalg.norm(second)
    heart = {
        "centre": heart_c,
        "axes": sz * np.array([rng.uniform(58, 66), rng.uniform(42, 48), rng.uniform(32, 38)]),
        "rotation": np.stack([long, second, np.cross(long, second)], axis=1),
    }
    zh, yh, xh = heart_c
    yd = ys - b  # front of the spine at the carina
    tubes["aorta"] = _tube(
        [
            [zh + 28, yh - 5, s.cx + 2],
            [z_car + 8, yt - 30, s.cx - 12],
            [z_car + 34, yt - 8, s.cx + 2],
            [z_car + 22, yd + 6, xs + 26],
            [z_car - 25, yd + 5, xs + 25],
            [s.z_dome[1] - 10, yd - 2, xs + 12],
            [-20, yd - 5, xs + 6],
        ],
        sz * np.array([15.0, 15, 14, 13, 12.5, 12, 11.5]),
    )
    tubes["brachiocephalic_trunk"] = _tube([[z_car + 36, yt - 18, s.cx - 4], [top, yt - 12, s.cx - 26]], [6.5 * sz] * 2)
    tubes["common_carotid_artery_left"] = _tube([[z_car + 38, yt - 10, s.cx + 8], [top, yt - 6, s.cx + 24]], [4.2 * sz] * 2)
    tubes["subclavian_artery_left"] = _tube([[z_car + 34, yt - 2, s.cx + 16], [top, yt + 6, s.cx + 48]], [5.0 * sz] * 2)
    tubes["brachiocephalic_vein_left"] = _tube([[top - 6, yt - 26, s.cx + 48], [z_car + 52, yt - 34, s.cx - 22]], [6.0 * sz] * 2)
    tubes["superior_vena_cava"] = _tube(
        [[top, yt - 26, s.cx - 36], [z_car + 52, yt - 34, s.cx - 24], [zh + 32, yh + 2, s.cx - 30]], sz * np.array([9.0, 10, 10.5])
    )
    bif = np.array([z_car - 6, yt - 12, s.cx + 12])
    hil_ra = np.array([z_car - 14, yt - 2, xt - 58 * sz])
    hil_la = np.array([z_car - 4, yt + 14, xt + 52 * sz])
    tubes["pulmonary_trunk"] = _tube([[zh + 22, yh - 32, s.cx + 22], bif], sz * np.array([13.0, 12.0]))
    tubes["pulmonary_artery_right"] = _tube([bif, [z_car - 10, yt - 12, s.cx - 16], hil_ra], sz * np.array([10.0, 9.5, 8.5]))
    tubes["pulmonary_artery_left"] = _tube([bif, [z_car + 2, yt + 2, s.cx + 36], hil_la], sz * np.array([10.0, 9.5, 8.5]))
    atrium = np.array([zh + 12, yh + 38 * sz, xh - 8])
    veins, roots = [], []
    for side, sign in (("right", -1), ("left", 1)):
        for dz in (-38.0, -62.0):
            hil = np.array([z_car + dz * sz, yt + 8, xt + sign * 50 * sz])
            veins.append(_tube([atrium, hil], [6.5 * sz, 6.0 * sz]))
            roots.append(Root(side, "vein", hil, hil - atrium, 6.0 * sz))
    tubes["pulmonary_vein"] = veins
    yes = yd - 8 * sz
    tubes["esophagus"] = _tube(
        [[top, yes - 4, xs + 4], [z_car, yes, xs + 8], [s.z_dome[1] + 10, yes - 10, xs + 18], [s.z_dome[1] - 25, yes - 32, xs + 42]],
        [7.5 * sz] * 4,
    )
    roots += [
        Root("right", "airway", right_end, right_end - car + np.array([-8.0, 0, -10]), 0.58 * r_tr - 1.6),
        Root("left", "airway", left_end, left_end - car + np.array([-10.0, 0, 6]), 0.5 * r_tr - 1.5),
        Root("right", "artery", hil_ra, np.array([-6.0, 2, -10]), 8.0 * sz),
        Root("left", "artery", hil_la, np.array([-6.0, 6, 10]), 8.0 * sz),
    ]
    info = {"carina_z": float(z_car), "air_in_esophagus": bool(rng.random() < 0.4)}
    return tubes, roots, {"heart": heart, **info}


def _diaphragm(s: Subject, z, y, x) -> np.ndarray:
    """Height of the diaphragm's upper surface (mm) at (y, x): two domes blended at the midline,
    falling off toward the wall, more steeply behind (posterior costophrenic recesses)."""
    half = s.body_a - 35.0
    out = []
    for side, sign in ((0, -1), (1, 1)):
        xd, yd = s.cx + sign * 0.48 * half, s.cy - 0.1 * s.body_b[0]
        ry = np.where(y > yd, 0.75, 1.1) * s.body_b[0]
        q = ((x - xd) / (0.62 * half)) ** 2 + ((y - yd) / ry) ** 2
        out.append(s.z_dome[side] - s.recess * np.minimum(q, 1.6))
    w = np.clip((x - s.cx + 20.0) / 40.0, 0, 1)
    # The central tendon under the heart stays near dome height; only the sides and back dip.
    lift = s.recess * np.exp(-(((x - s.cx) / (0.35 * half)) ** 2)) * np.where(y < s.cy, 0.9, 0.4)
    return (out[0] * (1 - w) + out[1] * w + lift).astype(np.float32)


def _apex(s: Subject, y, x, r_apex: float) -> np.ndarray:
    """Height of the lung apices' domes (mm) at (y, x): paraboloid caps over each hemithorax."""
    half = s.body_a - 35.0
    caps = [s.z_apex - ((x - (s.cx + sign * 0.45 * half)) ** 2 + (y - (s.cy + 0.2 * s.body_b[1])) ** 2) / (2 * r_apex) for sign in (-1, 1)]
    return np.maximum(caps[0], caps[1]).astype(np.float32)


def paint_thorax(canvas: Canvas, s: Subject, rng: np.random.Generator, tex: np.ndarray, d_cav: np.ndarray) -> tuple[list[Root], dict]:
    """Fill the cavity: mediastinal fat and structures, the abdomen below the diaphragm, the lungs
    (lobe labels, parenchyma with a gravity gradient and texture, fissures). Returns the hilar
    roots for the lung trees and a summary (carina height, lung volumes)."""
    z, y, x = canvas.grid()
    inside = d_cav < 0
    hu, lab = canvas.hu, canvas.labels
    hu[inside] = (HU["fat"] + 14.0 * tex)[inside]
    tubes, roots, info = mediastinal_tubes(s, rng)

    # Abdomen below the diaphragm (a 4 mm muscle sheet above it separates it from the lungs).
    z_d = _diaphragm(s, z, y, x)
    below = inside & (z < z_d + 4.0)
    hu[below] = HU["muscle"] + 6.0 * tex[below]
    abdomen = inside & (z < z_d)
    low = canvas.box((0, 0, 0), (max(s.z_dome) + 5.0, s.fov[1], s.fov[2]))
    if low[0].stop > low[0].start:
        bowel = smooth_field(rng, tuple(b.stop - b.start for b in low), (4.0, 6.0, 6.0), canvas.spacing) > 0.35
        sub = abdomen[low]
        hu[low][sub] = np.where(bowel, 32.0 + 8.0 * tex[low], HU["fat"] + 12.0 * tex[low])[sub]
    liver = abdomen & (x < s.cx + 22.0 + 0.45 * (s.cy - y))
    hu[liver] = (rng.uniform(52, 66) + 6.0 * tex)[liver]
    lab[liver] = ORGAN_LABELS["liver"]
    for organ, centre, axes in (
        ("spleen", (s.z_dome[1] - 38, s.cy + 0.45 * s.body_b[1], s.cx + 0.6 * s.body_a), (48, 45, 20)),
        ("stomach", (s.z_dome[1] - 40, s.cy - 0.15 * s.body_b[0], s.cx + 0.4 * s.body_a), (40, 40, 38)),
    ):
        box = canvas.box(np.subtract(centre, 70), np.add(centre, 70))
        start = np.array([b.start for b in box]) * np.asarray(canvas.spacing)
        rot = np.linalg.qr(np.eye(3) + 0.25 * rng.standard_normal((3, 3)))[0]
        gas = rng.random() < 0.6  # a gastric gas bubble, in front (the patient lies supine)
        if any(b.stop <= b.start for b in box):
            continue
        sdf = ellipsoid_sdf(
            tuple(b.stop - b.start for b in box), canvas.spacing, np.asarray(centre) - start, s.size * np.asarray(axes), rot
        )
        region = (sdf < 0) & abdomen[box]
        sub_hu = hu[box]
        if organ == "spleen":
            sub_hu[region] = (HU["spleen"] + 5.0 * tex[box])[region]
        else:
            _, yb, _ = canvas.grid(box)
            content = np.where(yb < centre[1] - 0.6 * axes[1] * s.size, HU["air"], 14.0) if gas else np.float32(14.0)
            sub_hu[region] = np.broadcast_to(np.where(sdf > -4.0, 40.0, content), region.shape)[region]
        lab[box][region] = ORGAN_LABELS[organ]

    # Mediastinum: structures painted, and their smooth union (with fat rims) as the lungs' limit,
    # evaluated on a box round the midline only.
    box = canvas.box((0, s.cy - s.body_b[0], s.cx - 105), (s.fov[0], s.cy + s.body_b[1], s.cx + 115))
    start = np.array([b.start for b in box]) * np.asarray(canvas.spacing)
    shape = tuple(b.stop - b.start for b in box)
    zb, yb, xb = canvas.grid(box)
    hub, labb = hu[box], lab[box]
    heart = info.pop("heart")
    h_sdf = ellipsoid_sdf(shape, canvas.spacing, heart["centre"] - start, heart["axes"], heart["rotation"])
    fat_rim = rng.uniform(3, 8)
    med = h_sdf - np.float32(fat_rim)
    heart_in = (h_sdf < 0) & (zb > _diaphragm(s, zb, yb, xb) - 6.0)
    hub[heart_in] = (rng.uniform(38, 52) + 4.0 * tex[box])[heart_in]
    labb[heart_in] = ORGAN_LABELS["heart"]
    air_esophagus = info["air_in_esophagus"]
    for name, tube in tubes.items():
        lines = tube if isinstance(tube, list) else [tube]
        shifted = [(p - start, r) for p, r in lines]
        sdf = tube_sdf(shape, canvas.spacing, shifted)
        if name in ("trachea", "bronchus_right", "bronchus_left"):
            lumen = tube_sdf(shape, canvas.spacing, [(p, np.maximum(r - 2.0, 1.0)) for p, r in shifted])
            wall = (sdf < 0) & (lumen >= 0)
            hub[wall] = 60.0
            hub[lumen < 0] = HU["air"]
            labb[sdf < 0] = ORGAN_LABELS["trachea"]
        else:
            region = (sdf < 0) & ~(heart_in & (name != "aorta"))
            hub[region] = (HU["blood"] + 4.0 * tex[box])[region] if name != "esophagus" else 38.0
            if name == "esophagus" and air_esophagus:
                hub[(sdf < -5.5) & (zb > info["carina_z"] - 40)] = HU["air"]
            if name in ORGAN_LABELS:
                labb[region] = ORGAN_LABELS[name]
        big = name in ("aorta", "pulmonary_trunk", "pulmonary_artery_right", "pulmonary_artery_left", "superior_vena_cava", "trachea")
        med = smin(med, sdf - np.float32(2.5), 8.0) if big else np.minimum(med, sdf - np.float32(2.5))
    xs, ys, a, b = spine_at(s, zb)
    column = np.maximum(np.abs(xb - xs) - a - 2.0, (ys - b) - yb)  # the vertebral column and all behind it
    med = smin(med, column, 6.0)
    band = np.abs(xb - np.float32(s.cx + 4.0)) - np.float32(rng.uniform(2.5, 7.0))
    med = np.minimum(med, band)

    # Lungs: cavity minus mediastinum, above the diaphragm, below the apices.
    lung_sdf = np.maximum(d_cav, z_d + np.float32(4.0) - z)
    lung_sdf = np.maximum(lung_sdf, z - _apex(s, y, x, rng.uniform(38, 52)))
    lung_sdf[box] = np.maximum(lung_sdf[box], -med)
    lung = lung_sdf < 0
    left = np.broadcast_to(x > np.float32(s.cx + 4.0), lung.shape)
    lung_box = canvas.box((0, s.cy - s.body_b[0], s.cx - s.body_a), s.fov)
    texture = fractal_field(rng, tuple(b.stop - b.start for b in lung_box), canvas.spacing, (0.8, 2.0), (0.6, 0.4))
    y_front = s.cy - s.body_b[0] + 20.0
    gravity = np.float32(rng.uniform(25, 60)) * np.clip((y - y_front) / np.float32(s.body_b[0] + s.body_b[1] - 60.0), 0, 1)
    parenchyma = np.float32(rng.uniform(-875, -840)) + gravity
    sub_lung = lung[lung_box]
    sub = np.broadcast_to(parenchyma, canvas.shape)[lung_box] + np.float32(rng.uniform(12, 18)) * texture
    hu[lung_box][sub_lung] = sub[sub_lung]
    info["lung_ml"] = {
        side: round(float((lung & (left if side == "left" else ~left)).sum()) * float(np.prod(canvas.spacing)) / 1000.0, 1)
        for side in ("right", "left")
    }
    _lobes(canvas, s, rng, lung, left, z, y, x)
    return roots, info


def _lobes(canvas: Canvas, s: Subject, rng: np.random.Generator, lung: np.ndarray, left: np.ndarray, z, y, x) -> None:
    """Lobe labels (TotalSegmentator ids) and faint fissure lines, computed on lung voxels only.
    Oblique fissure: a bent plane from the back at about T5 down to the front of the diaphragm,
    rising toward the mediastinum; the right horizontal fissure: about level with the fourth
    costal cartilage, in front of the oblique one."""
    tops = {lv[2]: lv[0] for lv in s.levels}
    y_a, y_p = s.cy - s.body_b[0] + 25.0, s.cy + s.body_b[1] - 55.0
    warp2d = smooth_field(rng, (1,) + canvas.shape[1:], (1.0, 25.0, 25.0), canvas.spacing)[0] * np.float32(4.0)
    for side, dome in (("right", s.z_dome[0]), ("left", s.z_dome[1])):
        iz, iy, ix = np.nonzero(lung & (left if side == "left" else ~left))
        zz, yy, xx = z[iz, 0, 0], y[0, iy, 0], x[0, 0, ix]
        warp = warp2d[iy, ix]
        z_back = tops.get(ORGAN_LABELS["vertebrae_T5"], s.z_apex - 90) - rng.uniform(-5, 15)
        z_front = dome + rng.uniform(0, 15)
        slope = (z_back - z_front) / (y_p - y_a)
        lateral = slope * rng.uniform(0.25, 0.5) * (np.abs(xx - np.float32(s.cx)) - np.float32(0.35 * s.body_a))
        oblique = (zz - (z_front + slope * (yy - y_a) - lateral) + warp) / np.float32(np.hypot(1.0, slope))  # > 0 above / in front
        if side == "left":
            ids = np.where(oblique >= 0, ORGAN_LABELS["lung_upper_lobe_left"], ORGAN_LABELS["lung_lower_lobe_left"])
            fissure = np.abs(oblique)
        else:
            horizontal = zz - np.float32(z_front + rng.uniform(45, 65)) + warp
            upper = np.where(horizontal >= 0, ORGAN_LABELS["lung_upper_lobe_right"], ORGAN_LABELS["lung_middle_lobe_right"])
            ids = np.where(oblique >= 0, upper, ORGAN_LABELS["lung_lower_lobe_right"])
            fissure = np.minimum(np.abs(oblique), np.where(oblique >= 0, np.abs(horizontal), 99.0))
        canvas.labels[iz, iy, ix] = ids
        canvas.hu[iz, iy, ix] += np.float32(90.0) * np.exp(-((fissure / np.float32(0.7)) ** 2))
