"""Chest phantom, part 2: the skeleton (canonical grid, see chest_body): vertebrae with discs,
canal, cord and processes (one TotalSegmentator label per level), twelve ribs a side with costal
cartilage, the sternum and the scapulae. Bone is cortex (~900 HU) in its outer 1.2 mm round
marrow (~260 HU); thin plates are drawn at the cortex's partial-volume value."""

from __future__ import annotations

import numpy as np

from .chest_body import HU, RIB_LAYER_MM, Canvas, Subject, fold, level_of, smoothstep, spine_at
from .chest_labels import ORGAN_LABELS


def _bone(sdf: np.ndarray) -> np.ndarray:
    """Bone HU from a signed distance (mm): cortex in the outer 1.2 mm, marrow inside."""
    return np.where(sdf > -1.2, HU["cortex"], HU["marrow"]).astype(np.float32)


def paint_spine(canvas: Canvas, s: Subject) -> None:
    """Vertebrae (body, arch, spinous and transverse processes), discs, canal with cord and CSF,
    one TotalSegmentator label per vertebra."""
    zz = np.arange(canvas.shape[0], dtype=np.float32) * np.float32(canvas.spacing[0])
    xs, ys, _, _ = spine_at(s, zz)
    box = canvas.box((0, ys.min() - 40, xs.min() - 65), (s.fov[0], ys.max() + 90, xs.max() + 65))
    z, y, x = canvas.grid(box)
    xs, ys, a, b = spine_at(s, z)
    ids, u = level_of(s, z)
    dx, dy = x - xs, y - ys
    body_sdf = (np.sqrt((dx / a) ** 2 + (dy / b) ** 2) - 1) * np.minimum(a, b)
    disc = u > 0.8
    rc = 8.0 * s.size
    yc = ys + b + 0.9 * rc
    r_canal = np.sqrt((dx / 1.15) ** 2 + (y - yc) ** 2)
    arch = np.maximum(r_canal - (rc + 5.5), rc - r_canal)
    d_sp = y - (yc + rc + 3.0)
    ids_sp, u_sp = level_of(s, z + 0.6 * np.clip(d_sp, 0, None))  # spinous processes point down
    spinous = fold(np.maximum, [np.abs(dx) - 3.5 * s.size, -d_sp, d_sp - 32 * s.size, np.abs(u_sp - 0.4) * 30 - 7.0])
    lateral = np.abs(dx) - (rc + 3.0)
    transverse = fold(np.maximum, [-lateral, lateral - 22 * s.size, np.abs(y - yc - 0.35 * lateral) - 5.0, np.abs(u - 0.35) * 30 - 6.0])
    posterior = fold(np.minimum, [np.where(u < 0.78, arch, 99.0), spinous, transverse])
    hu, lab = canvas.hu[box], canvas.labels[box]
    vert_body = (body_sdf < 0) & ~disc
    hu[:] = np.where(vert_body, _bone(body_sdf) - 40.0 * (1 - s.size), hu)
    hu[:] = np.where((body_sdf < 0) & disc, HU["disc"], hu)
    lab[:] = np.where(vert_body, ids, lab)
    elements = (posterior < 0) & (body_sdf >= 0)
    hu[:] = np.where(elements, _bone(posterior), hu)
    lab[:] = np.where(elements, np.where(spinous < 0, ids_sp, ids), lab)
    canal = (r_canal < rc) & (body_sdf >= 0)
    cord = np.sqrt((dx / 1.1) ** 2 + (y - yc) ** 2) < 0.55 * rc
    hu[:] = np.where(canal, np.where(cord, HU["cord"], HU["csf"]), hu)
    lab[:] = np.where(canal & cord, ORGAN_LABELS["spinal_cord"], np.where(canal, 0, lab))


# Rib k (1..12): vertical drop from head to front (mm at size 1) and where the bone ends in front
# (angle from the anterior midline, rad); ribs 1-10 continue as costal cartilage toward the sternum.
_RIB_DROP = (25, 45, 65, 80, 90, 95, 100, 100, 95, 90, 60, 45)
_RIB_FRONT = (0.35, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.5, 1.9)
_CARTILAGE_END = (0.15, 0.15, 0.16, 0.17, 0.18, 0.2, 0.22, 0.3, 0.4, 0.55, None, None)


def paint_ribs(canvas: Canvas, s: Subject, rng: np.random.Generator, d_cav: np.ndarray, phi: np.ndarray) -> None:
    """Twelve ribs a side hugging the pleura, each sloping down from its vertebra toward the front,
    with cortex and marrow, and costal cartilage from the bone's front end toward the sternum.

    Only voxels in a thin shell outside the pleura are evaluated: each rib is a band round the
    wall, `rib_offset` mm outside the lung, whose height z_k(phi) falls from the head to the front."""
    offset, t_r, h_r = 4.2, 3.4 * s.size, 5.6 * s.size
    shell = (d_cav > offset - t_r - 1.5) & (d_cav < offset + t_r + 1.5)
    iz, iy, ix = np.nonzero(shell)
    zc = iz.astype(np.float32) * np.float32(canvas.spacing[0])
    dc = d_cav[iz, iy, ix]
    ph = phi[iz, iy, ix] if phi.ndim == 3 and phi.shape[0] > 1 else phi[0, iy, ix]
    aphi = np.abs(ph)
    tops = {lv[2]: lv[0] for lv in s.levels}
    _, ys, _, _ = spine_at(s, np.float32(s.z_apex - 90))
    head = float(np.pi - np.arctan2(33.0 * s.size, float(ys + 20.0 - s.cy)))  # |phi| of the transverse-process tips
    best = np.full(zc.shape, 9.0, np.float32)
    best_id = np.zeros(zc.shape, np.uint8)
    best_cart = np.zeros(zc.shape, bool)
    gamma = rng.uniform(1.1, 1.5)
    drop_scale = s.size * rng.uniform(0.9, 1.1)
    for k in range(1, 13):
        z_head = tops.get(ORGAN_LABELS[f"vertebrae_T{k}"])
        if z_head is None:
            continue
        arc = np.clip((head - aphi) / head, 0.0, 1.0)  # 0 at the head, 1 at the anterior midline
        zk = z_head - 2.0 - _RIB_DROP[k - 1] * drop_scale * arc**gamma
        front = _CARTILAGE_END[k - 1] if _CARTILAGE_END[k - 1] is not None else _RIB_FRONT[k - 1]
        along = (aphi <= head) & (aphi >= front)
        h = h_r * (1.0 + 0.25 * arc) * (0.8 if k in (1, 11, 12) else 1.0)
        e = np.sqrt(((dc - offset) / t_r) ** 2 + ((zc - zk) / h) ** 2)
        closer = along & (e < best)
        best = np.where(closer, e, best)
        rid = np.where(ph > 0, ORGAN_LABELS[f"rib_left_{k}"], ORGAN_LABELS[f"rib_right_{k}"]).astype(np.uint8)
        best_id = np.where(closer, rid, best_id)
        best_cart = np.where(closer, aphi < _RIB_FRONT[k - 1], best_cart)
    inside = best < 1.0
    sdf = (best - 1.0) * t_r
    hu = np.where(best_cart, HU["cartilage"], np.where(sdf > -1.1, HU["cortex"], HU["marrow"]))
    sel = (iz[inside], iy[inside], ix[inside])
    canvas.hu[sel] = hu[inside]
    canvas.labels[sel] = np.where(best_cart[inside], ORGAN_LABELS["costal_cartilages"], best_id[inside])


def paint_sternum_scapulae(canvas: Canvas, s: Subject, rng: np.random.Generator, d_cav: np.ndarray, phi: np.ndarray) -> None:
    """Sternum (manubrium wider) in the anterior wall from the xiphoid up to the sternal notch, and
    the scapular blades over the posterolateral upper ribs (arms raised, so no humeri)."""
    z_bot, z_top = s.z_dome[0] - rng.uniform(0, 15), s.z_apex - rng.uniform(28, 42)
    box = canvas.box((z_bot, 0, s.cx - 60), (z_top, s.cy, s.cx + 60))
    z, _, _ = canvas.grid(box)
    dc, ph = d_cav[box], phi[box]
    # Lateral offset along the wall: the arc length at the midline's cage radius.
    arc = ph * np.float32(s.body_b[0] - s.fat - s.muscle - RIB_LAYER_MM)
    manubrium = smoothstep((z - (z_top - 45.0)) / 15.0)
    half_w = s.size * (15.0 + 9.0 * manubrium)
    e = np.sqrt((arc / half_w) ** 2 + ((dc - 5.5) / (5.5 * s.size)) ** 2)
    sternum = (e < 1) & (np.abs(ph) < 0.5)
    canvas.hu[box][sternum] = _bone((e - 1) * 5.5 * s.size)[sternum]
    canvas.labels[box][sternum] = ORGAN_LABELS["sternum"]
    # Scapulae: plates 2-6 mm thick in the muscle layer, over phi in about [1.9, 2.7].
    top, bottom = s.z_apex + rng.uniform(0, 15), s.z_apex - s.size * rng.uniform(120, 150)
    for side, label in ((1, "scapula_left"), (-1, "scapula_right")):
        centre, half = rng.uniform(2.2, 2.4), rng.uniform(0.3, 0.4)
        box = canvas.box((bottom, s.cy - 20, 0), (top, s.fov[1], s.fov[2]))
        z, _, _ = canvas.grid(box)
        u = (side * phi[box] - centre) / half  # -1 .. 1 across the blade
        v = (z - (top + bottom) / 2) / ((top - bottom) / 2)
        thick = 1.5 + 2.5 * np.clip(1 - u, 0, 2)  # thicker toward the lateral border
        depth = d_cav[box] - (RIB_LAYER_MM + 4.0)
        plate = (np.abs(u) < 1 - 0.35 * np.clip(v, 0, 1)) & (np.abs(v) < 1) & (np.abs(depth) < thick / 2)
        canvas.hu[box][plate] = 0.7 * HU["cortex"]  # a thin plate: cortex in partial volume
        canvas.labels[box][plate] = ORGAN_LABELS[label]
