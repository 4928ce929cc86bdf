"""Procedural late-gadolinium-enhancement (LGE) cardiac MRI stacks in the LeFusion EMIDEC layout.

    out/Pathological/images/Case_P001.nii.gz   short-axis stack, float32, arbitrary units ~0..1000
    out/Pathological/labels/Case_P001.nii.gz   uint8: 0 background, 1 LV cavity, 2 healthy myocardium,
                                               3 myocardial infarction (MI), 4 persistent microvascular
                                               obstruction (PMO); 3 and 4 replace 2, they never overlap
    out/Normal/images/Case_N001.nii.gz         no enhancement anywhere
    out/Normal/labels/Case_N001.nii.gz         labels 1/2, plus a CANDIDATE MI (3) / PMO (4) region
                                               painted where a lesion could be generated
    out/phantom.json                           settings + per-case metadata

Axis 0 runs from base (slice 0) to apex. In LGE, nulled healthy myocardium is dark, blood is bright,
infarcted myocardium is hyper-enhanced (brighter than blood), and microvascular obstruction is a
dark core inside the infarct. Infarcts grow from the endocardium outward (wavefront), so the MI is
a sector attached to the endocardium whose transmural extent is largest at its angular centre.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import Geometry, atomic_write_text, write_volume
from .noise import fractal_field, grid_mm, smooth_field, soft_occupancy

LABELS = {"background": 0, "cavity": 1, "myocardium": 2, "mi": 3, "pmo": 4}
PMO_FRACTION = 0.5  # share of infarcts drawn with a microvascular obstruction
EDGE_MM = 0.6  # partial-volume ramp at tissue boundaries


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles into (-pi, pi]."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _sector_score(
    dtheta: np.ndarray,
    half_width: np.ndarray,
    depth_mm: np.ndarray,
    inner_mm: np.ndarray | float,
    outer_mm: np.ndarray,
    r_mid: np.ndarray,
) -> np.ndarray:
    """Signed 'inside' distance (mm, >0 inside) of a myocardial sector: angular |dtheta| < half_width
    (measured as arc length at mid-wall) and inner_mm < depth below the endocardium < outer_mm."""
    angular = (half_width - np.abs(dtheta)) * r_mid
    return np.minimum(np.minimum(angular, depth_mm - inner_mm), outer_mm - depth_mm).astype(np.float32)


def make_cardiac_case(
    rng: np.random.Generator, roi_shape: tuple[int, int, int], spacing: tuple[float, float, float], pathological: bool
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One short-axis stack. Returns (image float32 (D,H,W) a.u., labels uint8 (D,H,W), meta).
    Normal stacks get the same lesion geometry in the labels only, never in the image."""
    shape = tuple(int(s) for s in roi_shape)
    depth_slices = shape[0]
    _, y, x = grid_mm(shape, spacing)
    extent = np.asarray(shape) * np.asarray(spacing)
    s = (np.arange(depth_slices, dtype=np.float32) / max(depth_slices - 1, 1))[:, None, None]  # 0 base .. 1 apex

    fit = min(1.0, float(min(extent[1:])) / 100.0)  # shrink the anatomy for small test fields of view
    # LV geometry: a tapering, slightly non-circular annulus whose centre drifts along the long axis.
    cy = np.float32(extent[1] / 2 + rng.uniform(-6, 6) * fit) + np.float32(rng.uniform(-4, 4) * fit) * s
    cx = np.float32(extent[2] / 2 + rng.uniform(-6, 6) * fit) + np.float32(rng.uniform(-4, 4) * fit) * s
    dy, dx = y - cy, x - cx
    r, theta = np.sqrt(dy**2 + dx**2), np.arctan2(dy, dx)
    r_base, t_base = fit * rng.uniform(16, 24), fit * rng.uniform(7, 12)
    r_endo = np.float32(r_base) * (1 - np.float32(rng.uniform(0.5, 0.72)) * s**2)
    thick = np.float32(t_base) * (1 - 0.35 * s**1.5) * (1 + np.float32(rng.uniform(0, 0.2)) * np.cos(theta - rng.uniform(-np.pi, np.pi)))
    wobble = sum(rng.uniform(0, 0.07) / (n - 1) * np.cos(n * theta + rng.uniform(0, 2 * np.pi)) for n in (2, 3, 4))
    r_endo = r_endo * (1 + wobble)
    r_epi = r_endo + thick
    depth = r - r_endo  # mm below the endocardium
    r_mid = r_endo + thick / 2
    cav_occ = soft_occupancy(r - r_endo, EDGE_MM)
    heart_occ = soft_occupancy(r - r_epi, EDGE_MM)
    labels = np.where(r < r_endo, 1, np.where(r < r_epi, 2, 0)).astype(np.uint8)

    # Surroundings: textured chest tissue, dark lungs laterally, RV blood crescent, pericardial fat.
    tex = fractal_field(rng, shape, spacing, ((0.1, 1.5, 1.5), (0.1, 4.0, 4.0), (0.1, 10.0, 10.0)), (0.4, 0.35, 0.25))
    img = np.float32(rng.uniform(200, 280)) + np.float32(45) * tex
    reach = r_base + t_base
    for side in (-1, 1):
        lx = cx + side * np.float32(reach + rng.uniform(18, 30))
        ly = cy + np.float32(rng.uniform(-8, 12))
        lung = ((x - lx) / np.float32(rng.uniform(18, 26))) ** 2 + ((y - ly) / np.float32(rng.uniform(30, 45))) ** 2
        img = img + soft_occupancy((np.sqrt(lung) - 1) * 20, 1.0) * (np.float32(rng.uniform(20, 50)) + 10 * tex - img)
    rv_angle = np.float32(np.arctan2(-0.4, -1.0) + rng.uniform(-0.35, 0.35))  # RV sits on the septal side
    rv_r = np.float32(rng.uniform(0.8, 1.1) * r_base) * (1 - 0.75 * s)
    rv_d = np.float32(reach) + rv_r * 0.35
    rv = np.sqrt((x - cx - rv_d * np.cos(rv_angle)) ** 2 + (y - cy - rv_d * np.sin(rv_angle)) ** 2) - rv_r
    rv_occ = soft_occupancy(rv, EDGE_MM) * soft_occupancy(r_epi + 2.0 - r, EDGE_MM)  # RV wall keeps it off the septum
    # Epicardial fat is patchy (grooves), not a full ring.
    fat_w = np.clip(3.0 * smooth_field(rng, shape, (0.1, 10.0, 10.0), spacing) - 0.5, 0, None)
    fat_occ = soft_occupancy(r - (r_epi + fat_w), EDGE_MM) * (fat_w > 0.3)
    blood = np.float32(rng.uniform(520, 680)) + np.float32(25) * smooth_field(rng, shape, (0.1, 3.0, 3.0), spacing)
    myo = np.float32(rng.uniform(70, 130)) + np.float32(12) * tex
    img = img + fat_occ * (np.float32(rng.uniform(380, 480)) - img)
    img = img + rv_occ * (blood - img)
    img = img + heart_occ * (myo - img)
    img = img + cav_occ * (blood - img)
    # Papillary muscles: dark spots in the cavity (base to mid), labelled cavity as in EMIDEC.
    for angle in (rv_angle + np.pi + rng.uniform(-0.9, -0.5), rv_angle + np.pi + rng.uniform(0.5, 0.9)):
        pr = np.float32(rng.uniform(2.0, 3.5))
        pd = r_endo - pr - np.float32(0.8)
        pap = np.sqrt((x - cx - pd * np.cos(angle)) ** 2 + (y - cy - pd * np.sin(angle)) ** 2) - pr
        img = img + soft_occupancy(pap, EDGE_MM) * (s < 0.7) * (myo - img)

    # Lesion: an endocardium-attached sector over a run of slices, most transmural at its centre.
    shortest = min(3, depth_slices)
    run = int(rng.integers(shortest, max(min(8, depth_slices - 1), shortest) + 1))
    k0 = int(rng.integers(0, depth_slices - run + 1))
    k = np.arange(depth_slices, dtype=np.float32)[:, None, None]
    z_profile = np.sqrt(np.clip(1 - ((k - (k0 + (run - 1) / 2)) / (run / 2 + 0.25)) ** 2, 0, 1))
    centre_angle = rng.uniform(-np.pi, np.pi)
    half_width = np.float32(np.deg2rad(rng.uniform(25, 75))) * z_profile
    half_width = half_width * (1 + 0.15 * smooth_field(rng, shape, (0.1, 6.0, 6.0), spacing))  # ragged lateral edges
    dtheta = _wrap(theta - np.float32(centre_angle)).astype(np.float32)
    has_pmo = bool(rng.random() < PMO_FRACTION)
    # MVO only occurs in large, (near-)transmural infarcts.
    transmurality = rng.uniform(0.8, 1.1) if has_pmo else rng.uniform(0.45, 1.1)
    taper = 0.55 + 0.45 * np.cos(np.clip(dtheta / np.maximum(half_width, 1e-3), -1, 1) * np.pi / 2)
    mi_score = _sector_score(dtheta, half_width, depth, -10.0, transmurality * thick * taper, r_mid)
    mi = (labels == 2) & (mi_score > 0)
    pmo = np.zeros_like(mi)
    if has_pmo:  # a dark core in the centre of the infarct, surrounded by enhancement
        p_half = half_width * np.float32(rng.uniform(0.35, 0.6)) * (z_profile > 0.6)
        p_in = np.float32(rng.uniform(0.1, 0.25)) * thick
        p_out = np.float32(rng.uniform(0.6, 0.85) * min(transmurality, 1.0)) * thick
        pmo_score = _sector_score(dtheta, p_half, depth, p_in, p_out, r_mid)
        pmo = mi & (pmo_score > 0)
        has_pmo = bool(pmo.any())
    labels[mi] = 3
    labels[pmo] = 4
    meta = {
        "mi_centre_deg": round(float(np.rad2deg(centre_angle)), 1),
        "mi_slices": [k0, k0 + run - 1],
        "transmurality": round(float(transmurality), 3),
        "pmo": has_pmo,
        "lv_radius_base_mm": round(float(r_base), 2),
        "wall_thickness_base_mm": round(float(t_base), 2),
        "mi_voxels": int(mi.sum()),
        "pmo_voxels": int(pmo.sum()),
    }
    if pathological:
        # The enhancement follows the soft sector edge so the boundary has partial volume.
        myo_occ = heart_occ - cav_occ
        mi_level = np.float32(rng.uniform(820, 980))
        img = img + soft_occupancy(-mi_score, 0.8) * myo_occ * (mi_level + 40 * tex - img)
        if has_pmo:
            img = img + soft_occupancy(-pmo_score, 0.7) * myo_occ * (np.float32(rng.uniform(90, 170)) + 12 * tex - img)
        meta["mi_level"] = round(float(mi_level), 1)

    # Acquisition: smooth coil-sensitivity bias, then Rician magnitude noise.
    bias_dir = rng.uniform(-np.pi, np.pi)
    ramp = ((x - extent[2] / 2) * np.cos(bias_dir) + (y - extent[1] / 2) * np.sin(bias_dir)) / np.float32(extent[1])
    img = img * (1 + np.float32(rng.uniform(0.05, 0.2)) * ramp)
    sigma = np.float32(rng.uniform(12, 25))
    real = img + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.sqrt(real**2 + imag**2).astype(np.float32)
    meta["noise_sigma"] = round(float(sigma), 2)
    return image, labels, meta


def write_cardiac_phantom(
    out: Path,
    n_pathological: int = 40,
    n_normal: int = 10,
    seed: int = 0,
    roi_shape: tuple[int, int, int] = (10, 72, 72),
    spacing: tuple[float, float, float] = (8.0, 1.4, 1.4),
) -> dict:
    """Write the cardiac phantom dataset under `out` (layout in the module docstring).

    Each case is seeded from (seed, split, index): same seed -> byte-identical arrays. Returns a
    summary: root, pathological / normal names, how many have PMO, and the metadata path.
    """
    out = Path(out)
    geometry = Geometry(spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    cases, names = [], {"pathological": [], "normal": []}
    for split, n, prefix in (("pathological", n_pathological, "P"), ("normal", n_normal, "N")):
        folder = out / split.capitalize()
        for i in range(n):
            name = f"Case_{prefix}{i + 1:03d}"
            rng = np.random.default_rng([seed, 10 if split == "pathological" else 11, i])
            image, labels, meta = make_cardiac_case(rng, roi_shape, spacing, split == "pathological")
            write_volume(image, folder / "images" / f"{name}.nii.gz", geometry)
            write_volume(labels, folder / "labels" / f"{name}.nii.gz", geometry)
            names[split].append(name)
            cases.append({"name": name, "split": split, **meta})
    settings = {
        "generator": "lefusion.phantoms.cardiac",
        "format_version": 1,
        "seed": seed,
        "roi_shape": list(roi_shape),
        "spacing_zyx_mm": list(spacing),
        "n_pathological": n_pathological,
        "n_normal": n_normal,
        "pmo_fraction": PMO_FRACTION,
        "intensity_unit": "arbitrary (LGE MRI)",
        "labels": LABELS,
        "slice_order": "base (0) to apex",
    }
    atomic_write_text(out / "phantom.json", json.dumps({"settings": settings, "cases": cases}, indent=1))
    return {
        "root": str(out),
        "pathological": names["pathological"],
        "normal": names["normal"],
        "n_pmo": sum(1 for c in cases if c["split"] == "pathological" and c["pmo"]),
        "metadata": str(out / "phantom.json"),
    }
