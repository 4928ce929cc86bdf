"""Procedural phantom datasets in the on-disk layouts of the real LeFusion datasets.

    write_lung_phantom(out)       lung CT nodule ROIs, LIDC layout (Pathological/Image, Mask, test.txt, Normal/...)
    write_cardiac_phantom(out)    LGE cardiac MRI stacks, EMIDEC layout (Pathological/images, labels, Normal/...)
    write_chest_phantom(out)      whole-chest CTs, plain layout (images/, masks/) + organs/ (TotalSegmentator ids)
    write_brain_phantom(out)      FLAIR-like brains on the MNI152 template with MS-like lesions, plain or
                                  nnU-Net layout + organs/ (1 CSF, 2 GM, 3 WM); needs nilearn ([brain] extra)
    render_phantom_preview(root, out_png)   a PNG contact sheet of a lung or cardiac folder, for a human look
    render_chest_preview(root, out_dir)     axial / coronal / sagittal PNGs of chest scans
    render_brain_preview(root, out_dir)     axial / coronal / sagittal PNGs of brain scans

They stand in for LIDC-IDRI / EMIDEC, which cannot be shipped: same file names, label ids, dtypes
and geometry conventions, so every loader, trainer and CLI path can be exercised end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import read_volume
from .brain import write_brain_phantom
from .brain_preview import render_brain_case, render_brain_preview
from .cardiac import write_cardiac_phantom
from .chest import write_chest_phantom
from .chest_preview import render_chest_preview
from .lung import write_lung_phantom

__all__ = [
    "PHANTOMS",
    "render_brain_preview",
    "render_chest_preview",
    "render_phantom_preview",
    "write_brain_phantom",
    "write_cardiac_phantom",
    "write_chest_phantom",
    "write_lung_phantom",
    "write_phantom",
]

PHANTOMS = {"lung": write_lung_phantom, "cardiac": write_cardiac_phantom, "chest": write_chest_phantom, "brain": write_brain_phantom}
# The options each phantom takes (as keyword arguments; the CLI flag is the same with dashes).
_OPTIONS = {
    "lung": {"seed", "n_pathological", "n_normal", "n_test", "roi_shape", "spacing"},
    "cardiac": {"seed", "n_pathological", "n_normal", "roi_shape", "spacing"},
    "chest": {"seed", "n_pathological", "n_normal", "n_test", "spacing", "fov_mm"},
    "brain": {"seed", "n_pathological", "n_normal", "n_test", "spacing", "skull", "layout"},
}
_WHY_NOT = {
    ("cardiac", "n_test"): "the cardiac one holds out the EMIDEC release's cases",
    ("chest", "roi_shape"): "the chest phantom writes whole scans; size them with --fov",
    ("brain", "roi_shape"): "the brain phantom writes whole brains",
    ("brain", "fov_mm"): "the brain phantom's field of view is the template's head",
}


def write_phantom(kind: str, out: Path, **options: object) -> dict:
    """Write the phantom `kind` ("lung", "cardiac", "chest" or "brain") with the options given (None = its default)."""
    if kind not in PHANTOMS:
        raise LeFusionError(f"unknown phantom {kind!r}; choose one of {', '.join(PHANTOMS)}")
    given = {k: v for k, v in options.items() if v is not None}
    for key in sorted(set(given) - _OPTIONS[kind]):
        owners = " and ".join(k for k in PHANTOMS if key in _OPTIONS[k])
        why = _WHY_NOT.get((kind, key), f"the {kind} phantom does not take it")
        plural = "s" if " and " in owners else ""
        raise LeFusionError(f"--{key.replace('_', '-').replace('-mm', '')} belongs to the {owners} phantom{plural} ({why})")
    return PHANTOMS[kind](Path(out), **given)


# Contour colours per label id (lung: 1 = nodule; cardiac: 1 cavity, 2 myocardium, 3 MI, 4 PMO).
_LUNG_COLOURS = {1: (255, 60, 60)}
_CARDIAC_COLOURS = {1: (60, 140, 255), 2: (60, 220, 90), 3: (255, 220, 0), 4: (255, 60, 255)}


def _pick_cases(root: Path, n: int, lung: bool) -> list[tuple[Path, Path, str]]:
    """(image, mask, caption) for n cases: pathological ones cycling through the lesion kinds
    (texture family / with-without PMO) so the sheet shows the variety, plus one normal case."""
    meta = json.loads((root / "phantom.json").read_text()) if (root / "phantom.json").is_file() else {"cases": []}
    path_cases = [c for c in meta["cases"] if c.get("split") == "pathological"]
    normal_cases = [c for c in meta["cases"] if c.get("split") == "normal"]
    kind = (lambda c: c.get("family")) if lung else (lambda c: "MI+PMO" if c.get("pmo") else "MI")
    groups: dict[str, list[dict]] = {}
    for c in path_cases:
        groups.setdefault(str(kind(c)), []).append(c)
    ordered = [g[i] for i in range(max((len(g) for g in groups.values()), default=0)) for g in groups.values() if i < len(g)]
    chosen = ordered[: max(n - 1, 1) if normal_cases else n] + normal_cases[:1]
    out = []
    for c in chosen[:n]:
        sub = "Pathological" if c["split"] == "pathological" else "Normal"
        if lung:
            img = root / sub / "Image" / f"{c['name']}.nii.gz"
            msk = root / sub / "Mask" / f"{c['name'].replace('Vol_', 'Mask_')}.nii.gz"
            caption = f"{c['name'][:12]} {c.get('family') or 'normal'} {c.get('diameter_mm', 0):.0f}mm"
        else:
            img, msk = root / sub / "images" / f"{c['name']}.nii.gz", root / sub / "labels" / f"{c['name']}.nii.gz"
            caption = f"{c['name']} {kind(c) if c['split'] == 'pathological' else 'normal (candidate)'}"
        out.append((img, msk, caption))
    return out


def _tile(image2d: np.ndarray, labels2d: np.ndarray, lo: float, hi: float, colours: dict, scale: int):
    """Grey image and the same with label contours, each (H*scale, W*scale, 3) uint8."""
    grey = np.clip((image2d.astype(np.float32) - lo) / (hi - lo), 0, 1)
    grey = ndimage.zoom(grey, scale, order=1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    over = rgb.copy()
    big = np.kron(labels2d, np.ones((scale, scale), dtype=labels2d.dtype))
    for label, colour in colours.items():
        region = big == label
        edge = region & ~ndimage.binary_erosion(region)
        over[edge] = colour
    return rgb, over


def render_phantom_preview(root: Path, out_png: Path, n: int = 6) -> Path:
    """Write a PNG contact sheet of `n` cases of a lung or cardiac phantom folder (of a chest
    phantom folder: the three planes of its first scan with nodules, see chest_preview): for each case the
    slice where the lesion (or candidate lesion) is largest, plain and with label contours, and a
    caption. Lung uses a lung window [-1100, 200] HU; cardiac a per-case 1-99.5 percentile window."""
    from PIL import Image, ImageDraw

    root, out_png = Path(root), Path(out_png)
    meta_path = root / "phantom.json"
    generator = json.loads(meta_path.read_text()).get("settings", {}).get("generator") if meta_path.is_file() else None
    if generator == "lefusion.phantoms.brain":  # a brain phantom: one scan's three planes
        cases = json.loads(meta_path.read_text())["cases"]
        name = next((c["name"] for c in cases if c.get("n_lesions")), cases[0]["name"] if cases else None)
        if name is None or not (root / "images").is_dir():
            raise LeFusionError(f"{root}: no cases in the plain layout (the preview reads images/, masks/, organs/)")
        image, mask, organs = (root / sub / f"{name}.nii.gz" for sub in ("images", "masks", "organs"))
        return render_brain_case(image, out_png, mask, organs)
    if (root / "organs").is_dir() and (root / "images").is_dir():  # a chest phantom: one scan's three planes
        from .chest_preview import render_chest_case

        cases = json.loads((root / "phantom.json").read_text())["cases"] if (root / "phantom.json").is_file() else []
        name = next((c["name"] for c in cases if c.get("nodules")), cases[0]["name"] if cases else None)
        if name is None:
            raise LeFusionError(f"{root}: no cases listed in phantom.json")
        image, mask, organs = (root / sub / f"{name}.nii.gz" for sub in ("images", "masks", "organs"))
        return render_chest_case(image, out_png, mask, organs)
    lung = (root / "Pathological" / "Image").is_dir()
    if not lung and not (root / "Pathological" / "images").is_dir():
        raise LeFusionError(f"{root}: neither a LIDC-style (Pathological/Image) nor EMIDEC-style (Pathological/images) folder")
    cases = _pick_cases(root, n, lung)
    if not cases:
        raise LeFusionError(f"{root}: no cases listed in phantom.json")
    scale, pad, text_h = 3, 4, 14
    tiles = []
    for img_path, msk_path, caption in cases:
        image, labels = read_volume(img_path).array, read_volume(msk_path).array.astype(np.uint8)
        lesion = labels >= (1 if lung else 3)
        z = int(np.argmax(lesion.sum(axis=(1, 2)))) if lesion.any() else image.shape[0] // 2
        lo, hi = (-1100.0, 200.0) if lung else tuple(float(v) for v in np.percentile(image, (1, 99.5)))
        plain, over = _tile(image[z], labels[z], lo, hi, _LUNG_COLOURS if lung else _CARDIAC_COLOURS, scale)
        tiles.append((np.concatenate([plain, np.zeros((plain.shape[0], pad, 3), np.uint8), over], axis=1), f"{caption} z={z}"))
    cols = min(3, len(tiles))
    rows = -(-len(tiles) // cols)
    th, tw = tiles[0][0].shape[:2]
    sheet = Image.new("RGB", (cols * (tw + 2 * pad), rows * (th + text_h + 2 * pad)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for k, (arr, caption) in enumerate(tiles):
        x0, y0 = (k % cols) * (tw + 2 * pad) + pad, (k // cols) * (th + text_h + 2 * pad) + pad
        draw.text((x0, y0), caption, fill=(255, 255, 255))
        sheet.paste(Image.fromarray(arr), (x0, y0 + text_h))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
