"""Chest phantom, part 1: the subject's proportions, the body wall and the table.

Everything is drawn on the *canonical* grid, which `chest.py` turns into the stored one: mm from
voxel (0, 0, 0); z from the upper abdomen (0) up to the thoracic inlet, y from anterior (0) to
posterior, x from the patient's right (0) to left, i.e. the ITK/DICOM LPS axes with the identity
direction. Angles phi around the body axis are measured from the anterior midline, positive toward
the patient's left. Shapes are closed-form functions of these coordinates, evaluated on whole
arrays (or on a box around a structure), never voxel by voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chest_labels import ORGAN_LABELS
from .noise import grid_mm

Spacing3 = tuple[float, float, float]

# Tissue HU as in real CT (non-contrast); textures and per-subject offsets are added on top.
HU = {
    "air": -1000.0,
    "fat": -95.0,
    "skin": 30.0,
    "muscle": 45.0,
    "blood": 42.0,
    "liver": 58.0,
    "spleen": 46.0,
    "cortex": 900.0,
    "marrow": 260.0,
    "cartilage": 110.0,
    "disc": 85.0,
    "csf": 10.0,
    "cord": 35.0,
}
RIB_LAYER_MM = 9.0  # ribs, intercostal muscle and parietal pleura between the muscle layer and the lung
NOMINAL_LENGTH_MM = 280.0  # cranio-caudal extent of a full chest scan (upper abdomen to thoracic inlet)


@dataclass
class Canvas:
    """A case being drawn: HU (float32) and organ labels (uint8), both (D, H, W) on the canonical grid."""

    hu: np.ndarray
    labels: np.ndarray
    spacing: Spacing3

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.hu.shape  # type: ignore[return-value]

    def box(self, lo_mm, hi_mm) -> tuple[slice, slice, slice]:
        """Index box covering [lo_mm, hi_mm] (z, y, x), clipped to the grid."""
        sp = np.asarray(self.spacing)
        lo = np.clip(np.floor(np.asarray(lo_mm, float) / sp).astype(int), 0, self.shape)
        hi = np.clip(np.ceil(np.asarray(hi_mm, float) / sp).astype(int) + 1, 0, self.shape)
        return tuple(slice(int(a), int(max(a, b))) for a, b in zip(lo, hi))  # type: ignore[return-value]

    def grid(self, box: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre mm coordinates of `box` (default: the whole grid), broadcastable (D,1,1), (1,H,1), (1,1,W)."""
        box = box or tuple(slice(0, n) for n in self.shape)  # type: ignore[assignment]
        start = [b.start * s for b, s in zip(box, self.spacing)]
        z, y, x = grid_mm(tuple(b.stop - b.start for b in box), self.spacing)  # type: ignore[arg-type]
        return z + np.float32(start[0]), y + np.float32(start[1]), x + np.float32(start[2])


@dataclass(frozen=True)
class Subject:
    """One subject's proportions (mm, canonical grid). Drawn by `draw_subject`."""

    fov: tuple[float, float, float]  # (z, y, x) extent of the grid
    size: float  # overall scale of the anatomy
    cx: float  # body axis, x
    cy: float  # body axis, y
    body_a: float  # skin semi-axis left-right at the widest level
    body_b: tuple[float, float]  # skin semi-axis anterior, posterior
    body_p: tuple[float, float]  # superellipse exponent anterior, posterior (flatter back)
    harmonics: np.ndarray  # (3, 3): orders 2..4 x (amplitude at z=0, amplitude at the top, phase)
    fat: float
    muscle: float
    pectoral: float
    paraspinal: float
    z_apex: float  # top of the lungs
    z_dome: tuple[float, float]  # diaphragm dome top, right and left
    recess: float  # depth of the costophrenic recesses below the domes
    spine: tuple[float, float, float, float, float]  # x, y of the vertebral body centre, kyphosis, scoliosis, its phase
    levels: tuple[tuple[float, float, int], ...]  # vertebral levels from the top: (top z, height, label id)


def fold(op, arrays):
    """op (np.maximum / np.minimum) over arrays of broadcastable shapes."""
    out = arrays[0]
    for a in arrays[1:]:
        out = op(out, a)
    return out


def smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def draw_subject(rng: np.random.Generator, fov: tuple[float, float, float]) -> Subject:
    """Proportions of an adult chest, varied smoothly around typical values (sizes from CT anatomy)."""
    fz, fy, fx = fov
    size = float(rng.uniform(0.9, 1.06))
    body_a = size * rng.uniform(138, 156)
    b_ant = size * rng.uniform(104, 122)
    body_b = (b_ant, b_ant * rng.uniform(0.88, 0.96))
    cx = fx / 2 + rng.uniform(-10, 10)
    # The back lies on the table; leave room under it for the couch if the field of view has it.
    cy = fy / 2 + rng.uniform(-12, 6)
    cy = min(cy, fy - body_b[1] - 42) if fy >= 2 * body_b[1] + 90 else cy
    harmonics = np.stack([rng.uniform(0, 0.03, 3), rng.uniform(0, 0.03, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    # Heights are laid out on a full-length chest scan; a shorter field of view shows its middle.
    nominal = max(fz, NOMINAL_LENGTH_MM)
    drop = (nominal - fz) / 2
    z_apex = nominal - rng.uniform(12, 30)
    recess = size * rng.uniform(45, 62)
    dome_r = z_apex - size * rng.uniform(175, 200)
    dome_l = dome_r - rng.uniform(10, 24)
    shift = max(0.0, 10 - (dome_l - recess))  # keep the costophrenic recesses inside a full scan
    z_apex, dome_r, dome_l = z_apex - drop, dome_r + shift - drop, dome_l + shift - drop
    fat = rng.uniform(7, 28)
    spine_y = cy + body_b[1] - size * rng.uniform(56, 66) - 0.4 * fat  # back skin to vertebral body centre
    spine = (cx + rng.uniform(-3, 3), spine_y, rng.uniform(4, 12), rng.uniform(0, 4), rng.uniform(0, 2 * np.pi))
    # T1's top near the lung apex; heights grow caudally (T1 ~19 mm ... T12 ~25 mm, discs included).
    levels, top = [], z_apex + rng.uniform(2, 14)
    names = ["vertebrae_C7"] + [f"vertebrae_T{k}" for k in range(1, 13)] + [f"vertebrae_L{k}" for k in range(1, 6)]
    height0 = size * rng.uniform(18, 20)
    levels.append((top + height0 * 0.9, height0 * 0.9, ORGAN_LABELS[names[0]]))
    for k, name in enumerate(names[1:]):
        if top < -30 - drop:
            break
        h = height0 + 0.55 * size * k
        levels.append((top, h, ORGAN_LABELS[name]))
        top -= h
    return Subject(
        fov=(float(fz), float(fy), float(fx)),
        size=size,
        cx=float(cx),
        cy=float(cy),
        body_a=float(body_a),
        body_b=(float(body_b[0]), float(body_b[1])),
        body_p=(float(rng.uniform(2.1, 2.5)), float(rng.uniform(2.7, 3.3))),
        harmonics=harmonics,
        fat=float(fat),
        muscle=float(size * rng.uniform(7, 11)),
        pectoral=float(size * rng.uniform(6, 14)),
        paraspinal=float(size * rng.uniform(30, 40)),
        z_apex=float(z_apex),
        z_dome=(float(dome_r), float(dome_l)),
        recess=float(recess),
        spine=tuple(float(v) for v in spine),  # type: ignore[arg-type]
        levels=tuple((float(t), float(h), int(i)) for t, h, i in levels),
    )


def polar(s: Subject, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the body axis (mm) and angle phi (0 anterior, + toward the left), both (1, H, W)."""
    dx, dy = x - np.float32(s.cx), y - np.float32(s.cy)
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dx, -dy).astype(np.float32)


_TABLE = np.linspace(-np.pi, np.pi, 4097, dtype=np.float32)


def _angular(s: Subject) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tables over phi (_TABLE) of the skin radius at z = 0 (A) and its change per unit height
    fraction (B), and of the wall thickness without (W0) and with (Wp) the upper-chest pectorals."""
    phi = _TABLE
    sin, cos = np.abs(np.sin(phi)), np.cos(phi)
    anterior = cos > 0
    b = np.where(anterior, s.body_b[0], s.body_b[1])
    p = np.where(anterior, s.body_p[0], s.body_p[1])
    r0 = 1.0 / ((sin / s.body_a) ** p + (np.abs(cos) / b) ** p) ** (1.0 / p)
    bend0 = sum(h[0] * np.cos(n * phi + h[2]) for n, h in zip((2, 3, 4), s.harmonics))
    bend1 = sum(h[1] * np.cos(n * phi + h[2]) for n, h in zip((2, 3, 4), s.harmonics))
    aphi = np.abs(phi)
    fat = s.fat * (0.75 + 0.5 * sin**2)
    w0 = fat + s.muscle + s.paraspinal * np.exp(-(((np.pi - aphi) / 0.55) ** 2)) + RIB_LAYER_MM
    wp = s.pectoral * np.exp(-(((aphi - 0.55) / 0.4) ** 2))
    return tuple(v.astype(np.float32) for v in (r0 * (1 + bend0), r0 * (bend1 - bend0), w0, wp))  # type: ignore[return-value]


def skin_radius(s: Subject, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Distance from the body axis to the skin at height z and angle phi: a superellipse (flatter
    at the back), bent by low-order harmonics that change smoothly with z, narrowing a little above
    the shoulders. float32, broadcast of z (D,1,1) and phi ((1,H,W) or (D,H,W))."""
    a, b, _, _ = _angular(s)
    t = z / np.float32(s.fov[0])
    narrow = 1.0 - 0.15 * smoothstep((z - (s.z_apex - 30.0)) / 70.0)
    return (narrow * (np.interp(phi, _TABLE, a) + t * np.interp(phi, _TABLE, b))).astype(np.float32)


def cage_taper(s: Subject, z: np.ndarray) -> np.ndarray:
    """Rib-cage radius relative to its widest level (a little above the domes): the cage is a dome,
    about half as wide at the first ribs as at the bases; shoulder-girdle muscle fills the wall."""
    widest = max(s.z_dome) + 30.0
    u = np.clip((z - widest) / max(s.z_apex + 12.0 - widest, 1.0), 0.0, 1.0)
    return (0.5 + 0.5 * np.sqrt(1.0 - u * u)).astype(np.float32)


def wall_thickness(s: Subject, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Skin-to-pleura thickness (mm) at the widest level: subcutaneous fat (thicker at the flanks),
    muscle (pectorals in the upper chest, paraspinal muscles at the back) and the rib layer."""
    _, _, w0, wp = _angular(s)
    upper = smoothstep((z - s.z_dome[0]) / max(s.z_apex - s.z_dome[0], 1.0))
    return (np.interp(phi, _TABLE, w0) + upper * np.interp(phi, _TABLE, wp)).astype(np.float32)


def cavity_distance(s: Subject, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed radial distances (mm, < 0 inside) to the skin and to the parietal pleura, and the
    angle phi round the rib cage's axis, all (D, H, W). The cage narrows toward the apex and its
    axis moves back (the thoracic inlet lies just in front of T1); shoulder-girdle muscle fills
    the thicker upper wall."""
    r, phi = polar(s, y, x)
    d_body = (r - skin_radius(s, z, phi)).astype(np.float32)
    del r
    taper = cage_taper(s, z)
    back = (1.0 - taper) * np.float32(0.7 * s.body_b[1])  # (D, 1, 1)
    dx, dy = x - np.float32(s.cx), y - np.float32(s.cy) - back
    r2, phi2 = np.sqrt(dx * dx + dy * dy), np.arctan2(dx, -dy).astype(np.float32)
    # Per slice, one table of the cage radius over phi: (skin - wall) * taper.
    a, b, w0, wp = _angular(s)
    zs = z.ravel()
    t = zs / np.float32(s.fov[0])
    narrow = 1.0 - 0.15 * smoothstep((zs - (s.z_apex - 30.0)) / 70.0)
    upper = smoothstep((zs - s.z_dome[0]) / max(s.z_apex - s.z_dome[0], 1.0))
    for k in range(len(zs)):
        cage = (narrow[k] * (a + t[k] * b) - (w0 + upper[k] * wp)) * taper.ravel()[k]
        r2[k] -= np.interp(phi2[k], _TABLE, cage).astype(np.float32)
    return d_body, r2, phi2


def spine_at(s: Subject, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertebral body centre x, y and its semi-axes (left-right, antero-posterior) at height z (mm)."""
    x0, y0, kyphosis, scoliosis, phase = s.spine
    half = s.fov[0] / 2
    t = z / np.float32(s.fov[0])
    xs = x0 + scoliosis * np.sin(np.pi * z / s.fov[0] + phase)
    ys = y0 - kyphosis * ((z - half) / half) ** 2
    return xs, ys, s.size * (14.0 + 6.0 * (1 - t)), s.size * (11.5 + 4.0 * (1 - t))


def level_of(s: Subject, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertebral level at height z: (label id, position 0 = top .. 1 = bottom of the level)."""
    tops = np.asarray([lv[0] for lv in s.levels])
    heights = np.asarray([lv[1] for lv in s.levels])
    ids = np.asarray([lv[2] for lv in s.levels])
    k = np.clip(np.searchsorted(-tops, -z, side="left") - 1, 0, len(tops) - 1)
    k = np.where(z > tops[0], 0, k)
    return ids[k], np.clip((tops[k] - z) / heights[k], 0.0, 1.5)


def paint_table(canvas: Canvas, s: Subject, rng: np.random.Generator) -> None:
    """The couch under the back: a gently curved carbon-fibre shell (~ +250 HU) round a foam core
    (~ -850 HU). It spans the whole width of the field of view, as real couches do."""
    _, y, x = canvas.grid()
    top = np.float32(s.cy + s.body_b[1] + rng.uniform(0.5, 3.0)) - (x - np.float32(s.cx)) ** 2 / np.float32(2 * rng.uniform(500, 900))
    thick, shell = rng.uniform(24, 40), 2.2
    depth = y - top  # (1, H, W)
    core = (depth > shell) & (depth < thick - shell)
    skin = ((depth >= 0) & (depth <= shell)) | ((depth >= thick - shell) & (depth <= thick))
    table = np.where(core, np.float32(rng.uniform(-880, -820)), np.where(skin, np.float32(rng.uniform(180, 320)), np.nan))
    canvas.hu[:] = np.where(np.isnan(table), canvas.hu, table).astype(np.float32)


def paint_wall(canvas: Canvas, s: Subject, tex: np.ndarray, d_body: np.ndarray, d_cav: np.ndarray, phi: np.ndarray) -> None:
    """Skin, subcutaneous fat (with septa), a thin intermuscular fat plane and muscle, from the skin
    down to the pleura. `tex` is a unit-variance soft-tissue texture (D, H, W)."""
    fat = s.fat * (0.75 + 0.5 * np.sin(phi) ** 2)
    hu = canvas.hu
    body = d_body < 0
    hu[body] = HU["muscle"] + 8.0 * tex[body]
    below_fat = -d_body - fat  # mm below the subcutaneous fat
    muscle_layer = (d_cav - d_body) - fat - RIB_LAYER_MM  # its thickness at this angle
    plane = body & (np.abs(below_fat - 0.45 * muscle_layer) < 0.9) & (muscle_layer > 8.0) & (d_cav > RIB_LAYER_MM)
    fatty = body & ((d_body > -fat) | plane)
    hu[fatty] = (HU["fat"] + 14.0 * tex)[fatty]
    hu[body & (d_body > -2.0)] = HU["skin"]
