"""FLAIR-like whole-brain MRI built on the real MNI152 template, with MS-like lesions.

    out/images/BRAIN-P001.nii.gz   float32 FLAIR-like intensities (arbitrary scanner units, > 0 in
                                   the brain; 0 outside it when skull-stripped), (D, H, W) = (z, y, x)
    out/masks/BRAIN-P001.nii.gz    uint8: 1 = MS lesion, 0 elsewhere (all 0 for BRAIN-N… cases)
    out/organs/BRAIN-P001.nii.gz   uint8 anatomy: 0 outside the brain, 1 CSF, 2 grey matter,
                                   3 white matter (brain mask = organs > 0, white matter = organs == 3)
    out/test.txt                   held-out pathological cases (names without suffix)
    out/phantom.json               settings and per case: split, test flag, lesions (kind, size, ...)

With layout="nnunet" the same cases form an nnU-Net v2 raw dataset in `out` instead (imagesTr /
labelsTr: the lesion-free and the training pathological cases; imagesTs / labelsTs: the test.txt
ones; dataset.json with channel "FLAIR"), with organs/, test.txt and phantom.json beside them.

What this is: a template-based phantom, not patient data. Every subject is the same real average
anatomy (ICBM 2009a, 1 mm; see brain_template) made different by
- a smooth random deformation (per-axis scale 0.93-1.07, rotation up to 4 degrees, shift up to
  3 mm, and a smooth displacement field of ~2.5 mm amplitude and 24 mm correlation length);
- FLAIR-like contrast from the tissue probabilities (partial volume kept): CSF suppressed
  (0.12-0.25 of white matter), grey matter 1.3-1.5 x white matter, mild tissue texture;
- a multiplicative bias field (smooth, 50 mm, +-10-20 %), slice thickness 1-3 mm (a Gaussian slice
  profile across z; never thinner than the grid), Rician noise (1.5-4 % of white matter);
- a skull-stripped image by default (like the public MS lesion datasets ship it, and what the FLAIR
  normalisation within the brain mask expects); `skull=True` adds a procedural skull (dark
  cortical bone, brighter marrow) and scalp (bright fat on FLAIR) around the brain, with noise in
  the air, since the shipped template is itself brain-extracted.
MS-like lesions (pathological cases only): see brain_lesions (periventricular ovoids perpendicular
to the ventricles, juxtacortical and deep white matter ones, 3-15 mm, a few to ~50 per subject).

Grid: the template's brain box plus a margin, at `spacing` (default 1 mm isotropic; coarser grids
such as 2 mm see the template blurred first, as a bigger voxel would). World coordinates are MNI
mm in LPS (identity direction). Each case is seeded from (seed, split, index): same seed,
byte-identical files; adding cases leaves earlier ones unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import Geometry, atomic_write_text, write_volume
from .brain_lesions import KIND_SHARES, KINDS, Subject, add_lesions, lesion_count
from .brain_template import TEMPLATE_ORIGIN_XYZ, load_template
from .noise import smooth_field

DEFAULT_SPACING = (1.0, 1.0, 1.0)
ORGAN_LABELS = {"background": 0, "csf": 1, "grey_matter": 2, "white_matter": 3}
LESION = 1
LAYOUTS = ("plain", "nnunet")
NNUNET_FOLDER = "Dataset523_BrainPhantom"
_COARSE_MM = 8.0  # grid of the deformation and bias fields (both vary over centimetres)


@lru_cache(maxsize=4)
def _maps(spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """The template's (gm, wm, csf, ventricles) as float32, sharpened, blurred for voxels bigger than 1 mm
    (a Gaussian of the extra width, FWHM = sqrt(s^2 - 1) mm per axis) so coarse grids get partial
    volume instead of aliasing."""
    t = load_template()
    sigma = [np.sqrt(max(s * s - 1.0, 0.0)) / 2.355 for s in spacing]
    # The template averages 152 brains, so its tissue borders are wider than one brain's: squaring
    # and renormalising the probabilities (total kept) gives one subject's sharper partial volume.
    total = t.gm + t.wm + t.csf
    squares = t.gm**2 + t.wm**2 + t.csf**2
    scale = np.divide(total, squares, out=np.zeros_like(total), where=squares > 0)
    maps = (t.gm**2 * scale, t.wm**2 * scale, t.csf**2 * scale, t.ventricles.astype(np.float32))
    if max(sigma) > 0:
        maps = tuple(ndimage.gaussian_filter(m, sigma, mode="constant") for m in maps)
    return maps


def _coarse_field(rng: np.random.Generator, shape: tuple[int, ...], spacing, sigma_mm: float) -> np.ndarray:
    """A smooth standard-normal field drawn on an 8 mm grid and interpolated to `shape` (cheap for
    correlation lengths of centimetres). float32 (D, H, W)."""
    coarse = tuple(max(4, int(np.ceil(n * s / _COARSE_MM)) + 1) for n, s in zip(shape, spacing))
    field = smooth_field(rng, coarse, sigma_mm, (_COARSE_MM,) * 3)  # type: ignore[arg-type]
    return ndimage.zoom(field, [n / c for n, c in zip(shape, coarse)], order=1, mode="nearest")


def _sample_subject(rng: np.random.Generator, spacing: tuple[float, float, float], margin_mm: float):
    """Warp the template maps onto this subject's grid. Returns (gm, wm, csf, ventricles) float32
    (D, H, W), the grid's start in template mm (z, y, x) and the deformation settings."""
    t = load_template()
    idx = np.argwhere(t.envelope)
    lo, hi = idx.min(0) - margin_mm, idx.max(0) + margin_mm
    sp = np.asarray(spacing)
    shape = tuple(int(np.ceil((h - lo_) / s)) + 1 for lo_, h, s in zip(lo, hi, sp))
    centre = idx.mean(0)
    scale = rng.uniform(0.93, 1.07, 3)
    angles = np.deg2rad(rng.uniform(-4.0, 4.0, 3))
    shift = rng.uniform(-3.0, 3.0, 3)
    rot = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    inverse = (rot.T / scale[:, None]).astype(np.float32)  # subject mm -> template mm (about the centre)
    amplitude = float(rng.uniform(1.5, 3.5))
    axes = [(lo[a] + np.arange(n, dtype=np.float32) * sp[a] - centre[a] - shift[a]).astype(np.float32) for a, n in enumerate(shape)]
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    coords = np.empty((3, *shape), np.float32)
    for a in range(3):
        p = [axes[k][grid[k].ravel()].reshape(grid[k].shape) for k in range(3)]
        coords[a] = centre[a] + inverse[a, 0] * p[0] + inverse[a, 1] * p[1] + inverse[a, 2] * p[2]
        coords[a] += np.float32(amplitude) * _coarse_field(rng, shape, spacing, 24.0)
    maps = [ndimage.map_coordinates(m, coords, order=1, mode="constant", cval=0.0, prefilter=False) for m in _maps(tuple(spacing))]
    deformation = {
        "scale_zyx": [round(float(v), 4) for v in scale],
        "rotation_deg_zyx": [round(float(np.rad2deg(v)), 2) for v in angles],
        "shift_mm_zyx": [round(float(v), 2) for v in shift],
        "displacement_mm": round(amplitude, 2),
    }
    return maps, lo, deformation


def _skull(rng: np.random.Generator, brain: np.ndarray, spacing, white: float) -> np.ndarray:
    """FLAIR-like intensity of procedural meninges / skull / scalp around `brain` (0 in the air):
    2 mm dark CSF and dura, 4-8 mm of bone (dark cortex, brighter marrow in the middle), 4-7 mm
    of scalp (fat, bright on FLAIR). float32 (D, H, W)."""
    d = ndimage.distance_transform_edt(~brain, sampling=spacing).astype(np.float32)
    bone = np.float32(rng.uniform(4.0, 8.0)) * (1.0 + 0.15 * _coarse_field(rng, brain.shape, spacing, 30.0))
    scalp = np.float32(rng.uniform(4.0, 7.0))
    out = np.zeros(brain.shape, np.float32)
    out[(d > 0) & (d <= 2.0)] = 0.15 * white
    in_bone = (d > 2.0) & (d <= 2.0 + bone)
    middle = np.abs(d - 2.0 - bone / 2) / (bone / 2)  # 0 in the diploe, 1 at the bone surfaces
    out[in_bone] = (white * (0.08 + 0.5 * np.clip(1.0 - middle, 0.0, 1.0) ** 2))[in_bone]
    out[(d > 2.0 + bone) & (d <= 2.0 + bone + scalp)] = 1.1 * white
    return out


def make_brain_case(
    rng: np.random.Generator, n_lesions: int = 0, spacing: tuple[float, float, float] = DEFAULT_SPACING, skull: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Geometry, dict]:
    """One subject. Returns (image float32, lesion mask uint8, organ labels uint8, geometry, meta),
    arrays (D, H, W) on the subject's grid (see the module docstring for what is drawn)."""
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    (gm, wm, csf, vent), start, deformation = _sample_subject(rng, spacing, 24.0 if skull else 10.0)
    shape = gm.shape
    total = gm + wm + csf
    brain = total > 0.5
    labels = np.where(brain, 1 + np.argmax(np.stack([csf, gm, wm]), axis=0), 0).astype(np.uint8)
    white = float(rng.uniform(300.0, 900.0))
    contrast = {"csf": float(rng.uniform(0.12, 0.25)), "grey_matter": float(rng.uniform(1.3, 1.5)), "white_matter": 1.0}
    texture = smooth_field(rng, shape, 1.5, spacing)  # type: ignore[arg-type]
    flair = white * (csf * contrast["csf"] + gm * contrast["grey_matter"] * (1.0 + 0.04 * texture) + wm * (1.0 + 0.025 * texture))
    flair = flair.astype(np.float32)
    subject = Subject(flair, labels, wm, vent > 0.5, spacing, white)  # type: ignore[arg-type]
    mask, lesions = add_lesions(subject, rng, n_lesions)
    if skull:
        flair = flair + _skull(rng, brain, spacing, white)
    bias_strength = float(rng.uniform(0.1, 0.2))
    flair *= np.exp(np.float32(bias_strength) * _coarse_field(rng, shape, spacing, 50.0)).astype(np.float32)
    thickness = float(max(spacing[0], rng.choice([1.0, 1.5, 2.0, 3.0])))
    sigma_z = np.sqrt(max(thickness**2 - spacing[0] ** 2, 0.0)) / 2.355 / spacing[0]
    flair = ndimage.gaussian_filter(flair, (sigma_z, 0.35, 0.35), mode="nearest")
    noise = float(rng.uniform(0.015, 0.04)) * white
    real = flair + rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
    imag = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
    image = np.sqrt(real * real + imag * imag).astype(np.float32)  # magnitude image: Rician noise
    if not skull:
        image[~brain] = 0.0
    origin = tuple(round(o + float(s), 3) for o, s in zip(TEMPLATE_ORIGIN_XYZ, start[::-1]))
    geometry = Geometry(spacing=spacing, origin=origin)  # type: ignore[arg-type]
    for lesion in lesions:
        lesion.pop("centre_mm")
    kinds = Counter(lesion["kind"] for lesion in lesions)
    meta = {
        "shape": list(shape),
        "spacing_zyx_mm": list(spacing),
        "origin_xyz_mm": list(origin),
        "skull_stripped": not skull,
        "white_matter_intensity": round(white, 2),
        "contrast_to_white_matter": {k: round(v, 3) for k, v in contrast.items()},
        "bias_field_strength": round(bias_strength, 3),
        "slice_thickness_mm": thickness,
        "noise_sigma": round(noise, 3),
        "deformation": deformation,
        "n_lesions": len(lesions),
        "lesion_volume_ml": round(float(mask.sum()) * float(np.prod(spacing)) / 1000.0, 3),
        "lesion_kinds": {k: kinds[k] for k in KINDS if kinds[k]},
        "lesions": lesions,
    }
    return image, mask.astype(np.uint8), labels, geometry, meta


def _check(n_normal: int, n_pathological: int, n_test: int | None, spacing, layout: str) -> tuple[int, tuple[float, float, float]]:
    for name, value in (("n_normal", n_normal), ("n_pathological", n_pathological)):
        if value < 0:
            raise LeFusionError(f"brain phantom: {name} must be >= 0, got {value}")
    if n_normal + n_pathological == 0:
        raise LeFusionError("the brain phantom needs at least one subject (n_normal + n_pathological = 0)")
    n_test = -(-n_pathological // 2) if n_test is None else n_test
    if not 0 <= n_test <= n_pathological:
        raise LeFusionError(f"brain phantom: n_test={n_test} must be between 0 and the {n_pathological} pathological subjects")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) < 0.5 or max(spacing) > 6:
        raise LeFusionError(f"brain phantom: spacing must be three voxel sizes (z, y, x) in [0.5, 6] mm, got {spacing}")
    if layout not in LAYOUTS:
        raise LeFusionError(f"brain phantom: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return n_test, spacing  # type: ignore[return-value]


def _paths(out: Path, layout: str, name: str, test: bool) -> tuple[Path, Path]:
    """Where a case's image and lesion mask go in the layout."""
    if layout == "plain":
        return out / "images" / f"{name}.nii.gz", out / "masks" / f"{name}.nii.gz"
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    return out / images / f"{name}_0000.nii.gz", out / labels / f"{name}.nii.gz"


def write_brain_phantom(
    out: Path,
    n_normal: int = 4,
    n_pathological: int = 4,
    n_test: int | None = None,
    seed: int = 0,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    skull: bool = False,
    layout: str = "plain",
) -> dict:
    """Write the brain phantom under `out` (layout and decisions in the module docstring).

    n_test: pathological subjects held out in test.txt (default: half, rounded up). layout:
    "plain" or "nnunet". Returns a summary: root, normal / pathological / test names and the
    metadata path. LeFusionError for bad options or a missing nilearn (`pip install 'lefusion[brain]'`).
    """
    out = Path(out)
    n_test, spacing = _check(n_normal, n_pathological, n_test, spacing, layout)
    names = {
        "normal": [f"BRAIN-N{i + 1:03d}" for i in range(n_normal)],
        "pathological": [f"BRAIN-P{i + 1:03d}" for i in range(n_pathological)],
    }
    test = sorted(np.random.default_rng([seed, 32]).permutation(names["pathological"])[:n_test].tolist()) if n_test else []
    cases = []
    for split, code in (("normal", 30), ("pathological", 31)):
        for i, name in enumerate(names[split]):
            rng = np.random.default_rng([seed, code, i])
            n_les = lesion_count(rng) if split == "pathological" else 0
            image, mask, organs, geometry, meta = make_brain_case(rng, n_les, spacing, skull)
            image_path, mask_path = _paths(out, layout, name, name in test)
            write_volume(image, image_path, geometry)
            write_volume(mask, mask_path, geometry)
            write_volume(organs, out / "organs" / f"{name}.nii.gz", geometry)
            cases.append({"name": name, "split": split, "test": name in test, **meta})
    atomic_write_text(out / "test.txt", "".join(f"{t}\n" for t in test))
    if layout == "nnunet":
        dataset = {
            "name": "BrainPhantom",
            "description": "lefusion brain phantom: FLAIR-like MNI152-based brains with MS-like lesions (not patient data)",
            "channel_names": {"0": "FLAIR"},
            "labels": {"background": 0, "lesion": LESION},
            "numTraining": n_normal + n_pathological - len(test),
            "file_ending": ".nii.gz",
        }
        atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=2))
    settings = {
        "generator": "lefusion.phantoms.brain",
        "format_version": 1,
        "template": "MNI152 ICBM 2009a symmetric (nilearn), gm / wm probability maps",
        "seed": seed,
        "spacing_zyx_mm": list(spacing),
        "skull_stripped": not skull,
        "layout": layout,
        "n_normal": n_normal,
        "n_pathological": n_pathological,
        "n_test": len(test),
        "intensity_unit": "arbitrary (FLAIR-like)",
        "modality": "mri",
        "mask_labels": {"lesion": LESION},
        "organ_labels": ORGAN_LABELS,
        "lesion_kind_shares": dict(zip(KINDS, KIND_SHARES)),
    }
    atomic_write_text(out / "phantom.json", json.dumps({"settings": settings, "cases": cases}, indent=1))
    return {"root": str(out), **names, "test": test, "metadata": str(out / "phantom.json")}
