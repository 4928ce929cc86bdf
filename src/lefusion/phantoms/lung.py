"""Procedural lung-CT nodule ROIs written in the LeFusion LIDC folder layout.

    out/Pathological/Image/PHANTOM-0001_CVol_1.nii.gz   ROI in HU, int16, (D, H, W) = roi_shape
    out/Pathological/Mask/PHANTOM-0001_CMask_1.nii.gz   uint8, 1 = nodule support, 0 elsewhere
    out/Pathological/test.txt                           held-out image names, without ".nii.gz"
    out/Normal/Image/PHANTOM-N001_CVol_1.nii.gz         nodule-free ROI
    out/Normal/Mask/PHANTOM-N001_CMask_1.nii.gz         candidate nodule mask inside the lung
    out/phantom.json                                    settings + per-case metadata

An ROI is textured parenchyma (~ -850 HU) with branching vessels, sometimes a piece of chest wall
along one side, and (pathological cases) one nodule near the centre, as LIDC crops are centred on
the nodule. Nodules come in three texture families with the HU histograms real ones show:
ground-glass (hazy, ~ -650..-450 HU, vessels stay visible), part-solid (ground-glass halo plus a
solid core ~ 0 HU) and solid (~ -10..+60 HU, sharp edge, sometimes spiculated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import Geometry, atomic_write_text, write_volume
from .noise import (
    correlated_noise,
    fractal_field,
    grid_mm,
    lobulated_blob_sdf,
    random_walk_tube,
    smooth_field,
    soft_occupancy,
    tube_sdf,
)

FAMILIES = ("ggo", "part_solid", "solid")
PROPORTIONS = (0.20, 0.25, 0.55)  # LIDC-like mix: solid nodules dominate
DIAMETER_MM = {"ggo": (6.0, 20.0), "part_solid": (5.0, 20.0), "solid": (4.0, 18.0)}
# A part-solid nodule's solid part is at least this wide (2 voxels at the demo's 1.4 mm) where the
# nodule allows, so a 5 mm one still shows a core the network can learn to place.
MIN_CORE_MM = 2.8


def family_counts(n: int) -> dict[str, int]:
    """Largest-remainder split of n cases over FAMILIES, at least one of each when n >= 3."""
    raw = np.asarray(PROPORTIONS) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(FAMILIES):
        while (counts == 0).any():
            counts[int(np.argmax(counts))] -= 1
            counts[int(np.argmin(counts))] += 1
    return dict(zip(FAMILIES, (int(c) for c in counts)))


def _vessel_tree(rng: np.random.Generator, extent: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """3-6 vessels entering through the ROI faces, each with 0-3 thinner side branches."""
    lines = []
    for _ in range(int(rng.integers(3, 7))):
        start = rng.uniform(0, 1, 3) * extent
        axis = int(rng.integers(3))
        start[axis] = 0.0 if rng.random() < 0.5 else extent[axis]
        target = extent * rng.uniform(0.25, 0.75, 3)
        trunk = random_walk_tube(rng, start, target - start, rng.uniform(0.9, 2.2), extent)
        lines.append(trunk)
        for _ in range(int(rng.integers(0, 4))):
            k = int(rng.integers(1, max(2, len(trunk[0]) - 1)))
            parent_dir = trunk[0][min(k + 1, len(trunk[0]) - 1)] - trunk[0][k - 1]
            side = rng.standard_normal(3)
            side -= side @ parent_dir / (parent_dir @ parent_dir + 1e-9) * parent_dir
            branch_dir = parent_dir / (np.linalg.norm(parent_dir) + 1e-9) + 0.8 * side / (np.linalg.norm(side) + 1e-9)
            lines.append(random_walk_tube(rng, trunk[0][k], branch_dir, 0.7 * trunk[1][k], extent, max_steps=12))
    return lines


def _chest_wall(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], keep_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """A curved slab of chest wall along one in-plane ROI edge: intercostal muscle, a fat layer,
    outer muscle and sometimes a rib. It never reaches `keep_out` (bool (D,H,W), the lesion plus a
    margin). Returns (occupancy (D,H,W) in [0,1], wall HU (D,H,W), info) or None."""
    z, y, x = grid_mm(shape, spacing)
    extent = np.asarray(shape) * np.asarray(spacing)
    axis, high = int(rng.integers(1, 3)), bool(rng.random() < 0.5)
    coord = (z, y, x)[axis]
    depth_from_edge = (extent[axis] - coord) if high else coord  # mm from the chosen ROI face
    along = (y, x)[2 - axis]  # the other in-plane axis, along which the pleura curves
    centre = extent[3 - axis] * rng.uniform(0.2, 0.8)
    curve = (along - np.float32(centre)) ** 2 / np.float32(2 * rng.uniform(60, 150))
    warp = smooth_field(rng, shape, 6.0, spacing) * np.float32(rng.uniform(0.4, 1.2))
    for depth in (rng.uniform(5.0, 12.0), 4.0, 2.5):  # back off until the lesion is clear of it
        pleura = np.float32(depth) + curve + warp  # pleura position, mm from the face
        inside = pleura - depth_from_edge  # mm beyond the pleura into the wall (>0 = wall)
        if not np.any((inside > -1.0) & keep_out):
            break
    else:
        return None
    fat_start, fat_end = rng.uniform(2.5, 4.5), rng.uniform(6.0, 9.0)
    hu = np.where(inside < fat_start, 45.0, np.where(inside < fat_end, -95.0, 55.0)).astype(np.float32)
    hu += np.float32(12.0) * smooth_field(rng, shape, 1.0, spacing)
    info = {"axis": "zyx"[axis], "side": "high" if high else "low", "depth_mm": round(float(depth), 2), "rib": False}
    if rng.random() < 0.5:  # a rib crossing the wall, cortical rim brighter than marrow
        rib_r = rng.uniform(3.5, 5.0)
        rib_depth = np.float32(fat_start + rib_r + 0.5)
        # The rib runs parallel to the pleura along one axis; it is round across the other.
        across = 0 if rng.random() < 0.5 else 3 - axis
        rib_c = np.float32(rng.uniform(0.3, 0.7) * extent[across])
        dist = np.sqrt((inside - rib_depth) ** 2 + ((z, y, x)[across] - rib_c) ** 2)
        hu = np.where(dist < rib_r, np.where(dist > rib_r - 1.6, 650.0, 230.0), hu).astype(np.float32)
        info["rib"] = True
    return soft_occupancy(-inside, 0.3), hu, info


def insert_nodule(
    rng: np.random.Generator,
    hu: np.ndarray,
    family: str,
    centre: np.ndarray,
    diameter: float,
    spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Blend a nodule of `family` into `hu` (D,H,W, HU). Returns (new hu, support sdf mm, info).
    The chest phantom calls it on a box round each of its nodules, so both phantoms share the families."""
    shape = hu.shape
    sdf = lobulated_blob_sdf(rng, shape, spacing, centre, diameter, n_lobes=int(rng.integers(0, 4)), warp=rng.uniform(0.08, 0.2))
    inner = fractal_field(rng, shape, spacing, (0.7, 1.5, 3.0), (0.5, 0.3, 0.2))
    info: dict = {}
    if family in ("ggo", "part_solid"):
        level = rng.uniform(-680, -520) if family == "ggo" else rng.uniform(-600, -440)
        # Hazy edge and patchy filling; max() keeps vessels (denser than the haze) visible through it.
        # Edge haze scales with size so a small GGO still reaches its full density inside.
        occ = soft_occupancy(sdf, min(rng.uniform(0.9, 1.6), 0.12 * diameter)) * np.clip(0.85 + 0.15 * inner, 0.5, 1.0)
        hu = np.maximum(hu + occ * (level + 45.0 * inner - hu), hu)
        info["halo_hu"] = round(float(level), 1)
    if family == "part_solid":
        radius = diameter / 2
        core_d = diameter * rng.uniform(min(0.62, max(0.4, MIN_CORE_MM / diameter)), 0.62)
        offset = rng.standard_normal(3)
        offset *= rng.uniform(0.0, 0.35) * (radius - core_d / 2) / np.linalg.norm(offset)
        core = lobulated_blob_sdf(rng, shape, spacing, centre + offset, core_d, n_lobes=int(rng.integers(0, 2)), warp=0.15)
        level = rng.uniform(-10, 50)
        hu = hu + soft_occupancy(core, 0.4) * (level + 20.0 * inner - hu)
        sdf = np.minimum(sdf, core)
        info.update(core_hu=round(float(level), 1), core_diameter_mm=round(float(core_d), 2))
    if family == "solid":
        spiculated = bool(rng.random() < 0.35)
        if spiculated:  # thin strands radiating from the surface, part of the lesion support
            lines = []
            for _ in range(int(rng.integers(4, 9))):
                u = rng.standard_normal(3)
                u /= np.linalg.norm(u)
                pts = np.stack([centre + u * diameter * 0.35, centre + u * (diameter / 2 + rng.uniform(2.0, 5.0))])
                lines.append((pts, np.array([rng.uniform(0.55, 0.8), 0.45])))
            sdf = np.minimum(sdf, tube_sdf(shape, spacing, lines))
        level = rng.uniform(-10, 60)
        hu = hu + soft_occupancy(sdf, rng.uniform(0.25, 0.45)) * (level + 18.0 * inner - hu)
        info.update(solid_hu=round(float(level), 1), spiculated=spiculated)
    return hu, sdf, info


def make_lung_case(
    rng: np.random.Generator, roi_shape: tuple[int, int, int], spacing: tuple[float, float, float], family: str | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One ROI. family in FAMILIES gives a nodule; None gives a nodule-free ROI whose mask is a
    candidate nodule placed in parenchyma. Returns (image int16 HU (D,H,W), mask uint8 (D,H,W), meta)."""
    shape = tuple(int(s) for s in roi_shape)
    extent = np.asarray(shape) * np.asarray(spacing)
    lo, hi = DIAMETER_MM[family or FAMILIES[int(rng.integers(3))]]
    hi = min(hi, 0.6 * float(extent.min()))  # small test ROIs still hold the whole lesion
    lo = min(lo, hi)
    diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # small nodules are commoner
    room = np.maximum(extent / 2 - diameter * 0.65 - 1.0, 0.0)
    centre = extent / 2 + rng.uniform(-1, 1, 3) * np.minimum(room, 4.0)

    z, y, x = grid_mm(shape, spacing)
    texture = fractal_field(rng, shape, spacing, (0.8, 2.0, 5.0), (0.45, 0.35, 0.2))
    gravity = np.float32(rng.uniform(0, 40)) * (y / np.float32(extent[1]))  # dependent lung is denser
    hu = np.float32(rng.uniform(-880, -830)) + np.float32(rng.uniform(22, 38)) * texture + gravity
    vessels = _vessel_tree(rng, extent)
    v_sdf = tube_sdf(shape, spacing, vessels)
    hu = hu + soft_occupancy(v_sdf, 0.35) * (np.float32(rng.uniform(40, 120)) + 15.0 * texture - hu)

    meta: dict = {"family": family, "n_vessels": len(vessels)}
    if family is not None:
        hu, sdf, info = insert_nodule(rng, hu, family, centre, diameter, spacing)
        meta.update(info)
    else:
        # Candidate lesion: the best of a few positions, least covered by vessels, as a radiologist
        # would not paint a nodule on a hilar vessel.
        best = None
        for _ in range(4):
            c = extent / 2 + rng.uniform(-1, 1, 3) * np.minimum(room, 6.0)
            s = lobulated_blob_sdf(rng, shape, spacing, c, diameter, n_lobes=int(rng.integers(0, 3)), warp=0.12)
            overlap = float((v_sdf[s < 0] < 0).mean()) if (s < 0).any() else 1.0
            if best is None or overlap < best[0]:
                best = (overlap, s, c)
        _, sdf, centre = best  # type: ignore[misc]
    # One connected lesion: a spicule tip thinner than a voxel can leave stray voxels behind.
    components, n_comp = ndimage.label(sdf < 0, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())[1:]
    mask = (components == int(np.argmax(sizes)) + 1).astype(np.uint8) if n_comp else np.zeros(shape, np.uint8)

    wall = _chest_wall(rng, shape, spacing, sdf < 2.0) if rng.random() < 0.45 else None
    if wall is not None:
        occ, wall_hu, meta["chest_wall"] = wall
        hu = hu + occ * (wall_hu - hu)
    noise_std = float(rng.uniform(20, 35))
    hu = hu + correlated_noise(rng, shape, noise_std, sigma_vox=0.7)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    voxel_ml = float(np.prod(spacing))
    meta.update(
        diameter_mm=round(diameter, 2),
        equivalent_diameter_mm=round(float(np.cbrt(6 * mask.sum() * voxel_ml / np.pi)), 2),
        centre_mm=[round(float(c), 2) for c in centre],
        centre_vox=[round(float(c / s), 2) for c, s in zip(centre, spacing)],
        noise_hu=round(noise_std, 2),
    )
    return image, mask, meta


def _pick_test(rng: np.random.Generator, names: list[str], families: list[str], n_test: int) -> list[str]:
    """n_test names, one per family first so every texture family is held out."""
    n_test = min(n_test, len(names))
    chosen: list[int] = []
    for fam in FAMILIES:
        idx = [i for i, f in enumerate(families) if f == fam]
        if idx and len(chosen) < n_test:
            chosen.append(int(rng.choice(idx)))
    rest = [i for i in range(len(names)) if i not in chosen]
    chosen += [int(i) for i in rng.choice(rest, size=n_test - len(chosen), replace=False)] if n_test > len(chosen) else []
    return sorted(names[i] for i in chosen)


def write_lung_phantom(
    out: Path,
    n_pathological: int = 48,
    n_normal: int = 12,
    n_test: int | None = None,
    seed: int = 0,
    roi_shape: tuple[int, int, int] = (32, 64, 64),
    spacing: tuple[float, float, float] = (1.0, 0.7, 0.7),
) -> dict:
    """Write the lung phantom dataset under `out` (layout in the module docstring).

    Cases are seeded individually from (seed, split, index), so the same seed gives byte-identical
    arrays and adding cases leaves earlier ones unchanged. n_test: pathological cases held out in
    test.txt (default about one in six). Returns a summary: root, family counts, pathological /
    normal / test names and the metadata path.
    """
    out = Path(out)
    if n_test is None:
        n_test = max(1, n_pathological // 6) if n_pathological else 0
    if n_pathological and n_test >= n_pathological:
        raise LeFusionError(f"n_test={n_test} would hold out all {n_pathological} pathological cases; nothing left to train on")
    geometry = Geometry(spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    counts = family_counts(n_pathological)
    families = [f for f in FAMILIES for _ in range(counts[f])]
    np.random.default_rng([seed, 2]).shuffle(families)

    cases, path_names, normal_names = [], [], []
    for split, n, fams in (("pathological", n_pathological, families), ("normal", n_normal, [None] * n_normal)):
        folder = out / ("Pathological" if split == "pathological" else "Normal")
        for i in range(n):
            name = f"PHANTOM-{i + 1:04d}_CVol_1" if split == "pathological" else f"PHANTOM-N{i + 1:03d}_CVol_1"
            rng = np.random.default_rng([seed, 0 if split == "pathological" else 1, i])
            image, mask, meta = make_lung_case(rng, roi_shape, spacing, fams[i])
            write_volume(image, folder / "Image" / f"{name}.nii.gz", geometry)
            write_volume(mask, folder / "Mask" / f"{name.replace('Vol_', 'Mask_')}.nii.gz", geometry)
            (path_names if split == "pathological" else normal_names).append(name)
            cases.append({"name": name, "split": split, **meta})

    test = _pick_test(np.random.default_rng([seed, 3]), path_names, families, n_test) if n_pathological else []
    atomic_write_text(out / "Pathological" / "test.txt", "".join(f"{t}\n" for t in test))
    for case in cases:
        case["test"] = case["name"] in test
    settings = {
        "generator": "lefusion.phantoms.lung",
        "format_version": 1,
        "seed": seed,
        "roi_shape": list(roi_shape),
        "spacing_zyx_mm": list(spacing),
        "n_pathological": n_pathological,
        "n_normal": n_normal,
        "n_test": len(test),
        "family_proportions": dict(zip(FAMILIES, PROPORTIONS)),
        "intensity_unit": "HU",
        "mask_labels": {"nodule": 1},
    }
    atomic_write_text(out / "phantom.json", json.dumps({"settings": settings, "cases": cases}, indent=1))
    return {
        "root": str(out),
        "families": counts,
        "pathological": path_names,
        "normal": normal_names,
        "test": test,
        "metadata": str(out / "phantom.json"),
    }
