"""Procedural whole-chest CT scans, written as a plain dataset with organ label maps.

    out/images/CHEST-N001.nii.gz   CT in HU, int16, (D, H, W) = (slices, rows, columns)
    out/masks/CHEST-N001.nii.gz    uint8 lesion mask on the same grid: 1 = nodule; all 0 if lesion-free
    out/organs/CHEST-N001.nii.gz   uint8 organ labels on the same grid, TotalSegmentator v2 ids
                                   (chest_labels.ORGAN_LABELS; lungs = lobes 10-14, trachea 16, ...)
    out/test.txt                   held-out pathological scans (names without suffix)
    out/phantom.json               settings, label ids, and per case its geometry and nodules

`CHEST-N…` scans are lesion-free (what `lefusion augment` puts lesions into); `CHEST-P…` scans have
1-3 real nodules and serve as real pathological cases, those in test.txt held out for evaluation.
It is the default data of the whole-scan jobs and of the whole-scan segmentation benchmark.

Decisions, as a CT reader would check them:

- Anatomy: body outline (superellipse, flatter back, smooth per-subject bends) lying on a curved
  couch; skin, subcutaneous fat, muscle; 12 ribs a side sloping down toward the front with costal
  cartilage, sternum, scapulae, vertebrae with discs, canal, cord and processes; mediastinum with
  heart, aorta and arch branches, SVC, pulmonary arteries and veins, esophagus, trachea and main
  bronchi; both lungs with lobes, fissures, vessel trees and paired bronchi; diaphragm domes
  (right higher) over liver, stomach (often a gas bubble) and spleen. The scan runs from the upper
  abdomen to the thoracic inlet; arms are raised, out of the field of view.
- HU (non-contrast): air -1000, lung -875..-840 with a dependent (posterior) gradient of 25-60 HU
  and fine texture, fat -95, muscle 45, blood and heart 38-52, liver 52-66, cartilage 110, marrow
  260, cortex 900, airway lumen air inside 45 HU walls. Vessels thin toward the periphery, so
  partial volume makes them fainter away from the hilum. Image = drawn HU blurred by a scanner
  PSF (sigma 0.5 voxel in-plane, 0.4 across slices), plus correlated noise (std 12-28 HU); in half
  of the scans the corners outside the reconstruction circle are -1024, as many scanners write.
- Nodules: the lung phantom's three texture families (ground glass, part-solid, solid; same
  proportions and 4-20 mm sizes, drawn by the same code), inside the lungs, by default at least
  4 mm from the pleura and 30 mm from the hilar roots; one in five is juxtapleural (it touches the
  pleura and is cut flat there). The mask is the nodule's support inside the lung.
- Grid: default spacing 2.5 x 0.8 x 0.8 mm (z, y, x; `Geometry.spacing` order) over a field of view
  of 280 x 350 x 350 mm, i.e. 112 x 438 x 438 voxels, like a routine chest CT with 2.5 mm slices.
  A shorter field of view (`fov_mm`) shows the middle of a full-length chest, a narrower one cuts
  the body at the sides, as a real field of view does; a coarse grid (6 x 4 x 4 mm) is for tests.
  Directions cycle through identity, a tilted grid (oblique: 4-12 degrees about the left-right
  axis, up to 5 about the cranio-caudal one; the anatomy lies along the grid, like a volume
  reformatted along a tilted patient), slices stored head first (z flipped) and RAS storage (x
  and y flipped, as some NIfTI converters write); flips re-order the voxels so the patient stays
  where it is in world (LPS) space. Origins are non-zero, like a scanner's table position.
- Determinism: each case is seeded from (seed, split, index), so the same seed gives
  byte-identical arrays and adding cases leaves earlier ones unchanged.
- Cost: vectorised numpy/scipy (loops only over slices, ribs and tree branches); one default
  chest takes about 15 s of one core to draw and write (27-30 s of CPU for two, measured) and 21 MB
  on disk, almost all of it the image; a 6 x 4 x 4 mm test chest (47 x 88 x 88) well under 1 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import Geometry, atomic_write_text, write_volume
from .chest_body import HU, Canvas, cavity_distance, draw_subject, paint_table, paint_wall
from .chest_labels import LUNG, NODULE, ORGAN_LABELS
from .chest_skeleton import paint_ribs, paint_spine, paint_sternum_scapulae
from .chest_thorax import Root, paint_thorax
from .chest_trees import paint_trees
from .lung import DIAMETER_MM, FAMILIES, PROPORTIONS, insert_nodule
from .noise import correlated_noise, smooth_field

DIRECTIONS = ("identity", "oblique", "identity", "flip_z", "identity", "ras")
DEFAULT_SPACING = (2.5, 0.8, 0.8)
DEFAULT_FOV = (280.0, 350.0, 350.0)
PLEURA_MARGIN_MM = 4.0
JUXTAPLEURAL_SHARE = 0.2
_LOBE_NAMES = {v: k for k, v in ORGAN_LABELS.items()}


def _place_nodules(canvas: Canvas, rng: np.random.Generator, n: int, roots: list[Root]) -> tuple[np.ndarray, list[dict]]:
    """Insert n nodules into the lungs of `canvas` (HU changed in place). Returns the nodule mask
    (bool, canonical grid) and per nodule: family, diameters, centre (canonical voxel), lobe, ..."""
    lung = np.isin(canvas.labels, LUNG)
    step = np.array([max(1, int(np.ceil(3.0 / s))) for s in canvas.spacing])
    coarse_mm = np.asarray(canvas.spacing) * step
    dist = ndimage.distance_transform_edt(lung[:: step[0], :: step[1], :: step[2]], sampling=coarse_mm)
    axes = [(np.arange(k) * m).reshape([-1 if a == i else 1 for a in range(3)]) for i, (k, m) in enumerate(zip(dist.shape, coarse_mm))]

    def apart(point, mm: float) -> np.ndarray:  # coarse voxels farther than mm from point
        return sum((ax - c) ** 2 for ax, c in zip(axes, point)) > mm * mm

    far_from_hila = np.logical_and.reduce([apart(r.point, 30.0) for r in roots])
    mask = np.zeros(canvas.shape, bool)
    nodules: list[dict] = []
    for _ in range(n):
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=PROPORTIONS))]
        lo, hi = DIAMETER_MM[family]
        diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        juxta = bool(rng.random() < JUXTAPLEURAL_SHARE)
        for _ in range(4):
            ok = (
                (dist >= 0.25 * diameter) & (dist <= 0.45 * diameter + coarse_mm.max())
                if juxta
                else dist >= diameter / 2 + PLEURA_MARGIN_MM
            )
            ok &= far_from_hila
            for other in nodules:
                ok &= apart(other["centre_mm"], (diameter + other["diameter_mm"]) / 2 + 10.0)
            candidates = np.argwhere(ok)
            if len(candidates):
                break
            diameter = max(lo, 0.7 * diameter)
        else:
            continue
        centre = candidates[int(rng.integers(len(candidates)))] * coarse_mm + rng.uniform(-0.5, 0.5, 3) * coarse_mm
        reach = diameter / 2 + 10.0
        box = canvas.box(centre - reach, centre + reach)
        start = np.array([b.start for b in box]) * np.asarray(canvas.spacing)
        new, sdf, info = insert_nodule(rng, canvas.hu[box].copy(), family, centre - start, diameter, canvas.spacing)
        in_lung = lung[box]
        support, n_comp = ndimage.label((sdf < 0) & in_lung, structure=np.ones((3, 3, 3)))
        if not n_comp:
            continue
        keep = support == int(np.argmax(np.bincount(support.ravel())[1:])) + 1
        canvas.hu[box] = np.where(in_lung, new, canvas.hu[box])
        mask[box] |= keep
        lobe = int(np.bincount(canvas.labels[box][keep]).argmax())
        voxels = int(keep.sum())
        nodules.append(
            {
                "family": family,
                "diameter_mm": round(diameter, 2),
                "equivalent_diameter_mm": round(float(np.cbrt(6 * voxels * np.prod(canvas.spacing) / np.pi)), 2),
                "voxels": voxels,
                "juxtapleural": juxta,
                "lobe": _LOBE_NAMES.get(lobe, "unknown"),
                "centre_mm": centre,
                **info,
            }
        )
    return mask, nodules


def _geometry(kind: str, shape: tuple[int, int, int], spacing, rng: np.random.Generator) -> tuple[Geometry, tuple[bool, bool, bool]]:
    """Stored geometry for a direction kind, and which array axes (z, y, x) are flipped against the
    canonical grid. Origins are placed like a scanner's: the field of view centred near the
    isocentre, the z origin at a table position."""
    sz, sy, sx = spacing
    depth, rows, cols = shape
    origin = np.array([-(cols - 1) * sx / 2 + rng.uniform(-15, 15), -(rows - 1) * sy / 2 + rng.uniform(-30, 10), rng.uniform(-450, -100)])
    direction = np.eye(3)
    flips = (False, False, False)
    if kind == "oblique":
        ax, az = np.deg2rad(rng.uniform(4, 12) * rng.choice([-1, 1])), np.deg2rad(rng.uniform(-5, 5))
        rot_x = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        rot_z = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        direction = rot_z @ rot_x
    elif kind == "flip_z":
        direction, flips = np.diag([1.0, 1.0, -1.0]), (True, False, False)
        origin = origin + np.array([0, 0, (depth - 1) * sz])
    elif kind == "ras":
        direction, flips = np.diag([-1.0, -1.0, 1.0]), (False, True, True)
        origin = origin + np.array([(cols - 1) * sx, (rows - 1) * sy, 0])
    elif kind != "identity":
        raise LeFusionError(f"unknown direction kind {kind!r}; choose one of {', '.join(sorted(set(DIRECTIONS)))}")
    geometry = Geometry(
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(round(float(v), 3) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )  # type: ignore[arg-type]
    return geometry, flips


def world_mm(geometry: Geometry, index_zyx) -> list[float]:
    """World (LPS, x y z) mm of a continuous voxel index (z, y, x) on a grid with `geometry`."""
    d = np.asarray(geometry.direction).reshape(3, 3)
    offset = np.asarray(index_zyx, float)[::-1] * np.asarray(geometry.spacing)[::-1]
    return [round(float(v), 2) for v in np.asarray(geometry.origin) + d @ offset]


def make_chest_case(
    rng: np.random.Generator,
    n_nodules: int = 0,
    direction: str = "identity",
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    fov_mm: tuple[float, float, float] = DEFAULT_FOV,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Geometry, dict]:
    """One chest. Returns (image int16 HU, nodule mask uint8, organ labels uint8, geometry, meta),
    arrays (D, H, W) on the stored grid (see the module docstring for what is drawn)."""
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    shape = tuple(max(8, int(round(f / s))) for f, s in zip(fov_mm, spacing))
    fov = tuple(n * s for n, s in zip(shape, spacing))
    canvas = Canvas(np.full(shape, HU["air"], np.float32), np.zeros(shape, np.uint8), spacing)  # type: ignore[arg-type]
    subject = draw_subject(rng, fov)  # type: ignore[arg-type]
    z, y, x = canvas.grid()
    d_body, d_cav, phi = cavity_distance(subject, z, y, x)
    tex = smooth_field(rng, shape, 1.5, spacing)  # type: ignore[arg-type]
    paint_table(canvas, subject, rng)
    paint_wall(canvas, subject, tex, d_body, d_cav, phi)
    del d_body
    roots, info = paint_thorax(canvas, subject, rng, tex, d_cav)
    counts = paint_trees(canvas, roots, rng)
    paint_ribs(canvas, subject, rng, d_cav, phi)
    paint_sternum_scapulae(canvas, subject, rng, d_cav, phi)
    paint_spine(canvas, subject)
    del d_cav, tex
    mask, nodules = _place_nodules(canvas, rng, n_nodules, roots)
    hu = ndimage.gaussian_filter(canvas.hu, (0.4, 0.5, 0.5), mode="nearest")
    noise_std = float(rng.uniform(12, 28))
    hu += correlated_noise(rng, shape, noise_std, sigma_vox=0.7)  # type: ignore[arg-type]
    circle = bool(rng.random() < 0.5)
    if circle:  # outside the reconstruction circle
        radius = min(fov[1], fov[2]) / 2
        hu[:, ((y - fov[1] / 2) ** 2 + (x - fov[2] / 2) ** 2 > radius**2)[0]] = -1024.0
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    geometry, flips = _geometry(direction, shape, spacing, rng)  # type: ignore[arg-type]
    flip = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    image, labels, mask = image[flip], canvas.labels[flip], mask.astype(np.uint8)[flip]
    for nod in nodules:
        canonical = nod.pop("centre_mm") / np.asarray(spacing)
        stored = [shape[a] - 1 - c if flips[a] else c for a, c in enumerate(canonical)]
        nod["centre_vox"] = [round(float(c), 2) for c in stored]
        nod["centre_world_mm"] = world_mm(geometry, stored)
    meta = {
        "direction_kind": direction,
        "shape": list(shape),
        "spacing_zyx_mm": list(spacing),
        "origin_xyz_mm": list(geometry.origin),
        "direction": list(geometry.direction),
        "noise_hu": round(noise_std, 2),
        "reconstruction_circle": circle,
        "size": round(subject.size, 3),
        "lung_ml": info["lung_ml"],
        "tree_segments": counts,
        "nodules": nodules,
    }
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), np.ascontiguousarray(labels), geometry, meta


def write_chest_phantom(
    out: Path,
    n_normal: int = 4,
    n_pathological: int = 4,
    n_test: int | None = None,
    seed: int = 0,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    fov_mm: tuple[float, float, float] = DEFAULT_FOV,
) -> dict:
    """Write the chest phantom under `out` (layout and decisions in the module docstring).

    n_test: pathological scans held out in test.txt (default: half of them, rounded up; all may be
    held out, since the lesion-free scans plus synthetic lesions can be the training set).
    Returns a summary: root, normal / pathological / test names and the metadata path.
    """
    out = Path(out)
    for name, value in (("n_normal", n_normal), ("n_pathological", n_pathological)):
        if value < 0:
            raise LeFusionError(f"{name} must be >= 0, got {value}")
    if n_normal + n_pathological == 0:
        raise LeFusionError("the chest phantom needs at least one scan (n_normal + n_pathological = 0)")
    n_test = -(-n_pathological // 2) if n_test is None else n_test
    if not 0 <= n_test <= n_pathological:
        raise LeFusionError(f"n_test={n_test} must be between 0 and the {n_pathological} pathological scans")
    spacing, fov_mm = _check_grid(spacing, fov_mm)
    cases, names = [], {"normal": [], "pathological": []}
    for split, n, code, prefix in (("normal", n_normal, 20, "N"), ("pathological", n_pathological, 21, "P")):
        for i in range(n):
            name = f"CHEST-{prefix}{i + 1:03d}"
            rng = np.random.default_rng([seed, code, i])
            n_nod = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])) if split == "pathological" else 0
            kind = DIRECTIONS[(i + (split == "pathological")) % len(DIRECTIONS)]
            image, mask, organs, geometry, meta = make_chest_case(rng, n_nod, kind, spacing, fov_mm)
            for folder, array in (("images", image), ("masks", mask), ("organs", organs)):
                write_volume(array, out / folder / f"{name}.nii.gz", geometry)
            names[split].append(name)
            cases.append({"name": name, "split": split, **meta})
    test = sorted(np.random.default_rng([seed, 22]).permutation(names["pathological"])[:n_test].tolist()) if n_test else []
    atomic_write_text(out / "test.txt", "".join(f"{t}\n" for t in test))
    for case in cases:
        case["test"] = case["name"] in test
    settings = {
        "generator": "lefusion.phantoms.chest",
        "format_version": 1,
        "seed": seed,
        "spacing_zyx_mm": list(spacing),
        "fov_zyx_mm": list(fov_mm),
        "n_normal": n_normal,
        "n_pathological": n_pathological,
        "n_test": len(test),
        "intensity_unit": "HU",
        "mask_labels": {"nodule": NODULE},
        "organ_labels": ORGAN_LABELS,
        "organ_label_convention": "TotalSegmentator v2 'total' ids; lungs = 10-14",
        "family_proportions": dict(zip(FAMILIES, PROPORTIONS)),
        "directions": list(DIRECTIONS),
    }
    atomic_write_text(out / "phantom.json", json.dumps({"settings": settings, "cases": cases}, indent=1))
    return {"root": str(out), **names, "test": test, "metadata": str(out / "phantom.json")}


def _check_grid(spacing, fov_mm) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    spacing, fov_mm = tuple(float(s) for s in spacing), tuple(float(f) for f in fov_mm)
    if len(spacing) != 3 or min(spacing) <= 0 or max(spacing) > 10:
        raise LeFusionError(f"chest phantom: spacing must be three voxel sizes (z, y, x) in (0, 10] mm, got {spacing}")
    if len(fov_mm) != 3 or not (40 <= fov_mm[0] <= 450 and 120 <= min(fov_mm[1:]) and max(fov_mm[1:]) <= 600):
        raise LeFusionError(
            f"chest phantom: field of view (z, y, x) must be 40-450 mm cranio-caudally and 120-600 mm in-plane, got {fov_mm}"
        )
    return spacing, fov_mm  # type: ignore[return-value]
