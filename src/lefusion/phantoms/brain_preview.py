"""PNG views of a brain phantom case for a human look: axial (the slice with the most lesion),
coronal and sagittal planes (through the largest lesion), FLAIR window 0 .. 99.5th brain
percentile, plain on the top row and with lesion outlines (red) and the white-matter edge (blue,
faint) on the bottom one; radiological convention, square pixels in mm."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import atomic_write_bytes, read_volume
from .chest_preview import _plane

_LESION_EDGE, _WM_EDGE = (255, 50, 50), (70, 120, 200)


def _tile(image: np.ndarray, wm: np.ndarray | None, lesion: np.ndarray | None, hi: float, scale: tuple[float, float]) -> np.ndarray:
    """(rows, cols, 3) uint8 of one plane, zoomed to square mm pixels, with outlines drawn."""
    grey = ndimage.zoom(np.clip(image.astype(np.float32) / hi, 0, 1), scale, order=1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    for region, colour in ((wm, _WM_EDGE), (lesion, _LESION_EDGE)):
        if region is not None:
            big = ndimage.zoom(region.astype(np.uint8), scale, order=0).astype(bool)
            rgb[big & ~ndimage.binary_erosion(big)] = colour
    return rgb


def render_brain_case(
    image_path: Path, out_png: Path, mask_path: Path | None = None, organs_path: Path | None = None, mm_per_pixel: float = 1.0
) -> Path:
    """Write a 2 x 3 PNG of one brain scan (see the module docstring); returns its path."""
    from PIL import Image, ImageDraw

    vol = read_volume(image_path)
    image = vol.array
    lesion = read_volume(mask_path).array > 0 if mask_path else None
    organs = read_volume(organs_path).array if organs_path else None
    wm = organs == 3 if organs is not None else None
    brain = organs > 0 if organs is not None else image > 0
    hi = float(np.percentile(image[brain], 99.5)) if brain.any() else float(image.max() or 1.0)
    if lesion is not None and lesion.any():
        parts, _ = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
        largest = int(np.argmax(np.bincount(parts.ravel())[1:])) + 1
        centre = [int(round(c)) for c in ndimage.center_of_mass(parts == largest)]
        centre[0] = int(np.argmax(lesion.sum(axis=(1, 2))))
    else:
        centre = [int(round(c)) for c in ndimage.center_of_mass(brain)]
    sz, sy, sx = vol.geometry.spacing
    scales = {
        0: (sy / mm_per_pixel, sx / mm_per_pixel),
        1: (sz / mm_per_pixel, sx / mm_per_pixel),
        2: (sz / mm_per_pixel, sy / mm_per_pixel),
    }
    rows = []
    for outlines in (False, True):
        tiles = []
        for axis in (0, 1, 2):
            cut = [_plane(a, axis, centre[axis]) if a is not None else None for a in (image, wm, lesion)]
            tiles.append(_tile(cut[0], cut[1] if outlines else None, cut[2] if outlines else None, hi, scales[axis]))
        rows.append(tiles)
    pad, text = 6, 16
    widths = [t.shape[1] for t in rows[0]]
    height = max(t.shape[0] for t in rows[0])
    sheet = Image.new("RGB", (sum(widths) + pad * 4, 2 * (height + text) + pad * 3), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for r, tiles in enumerate(rows):
        x0 = pad
        for axis, tile in enumerate(tiles):
            y0 = pad + r * (height + text + pad)
            label = f"{('axial', 'coronal', 'sagittal')[axis]} #{centre[axis]}" + (
                " lesions red, WM blue" if r else f" {Path(image_path).name}"
            )
            draw.text((x0, y0), label, fill=(230, 230, 230))
            sheet.paste(Image.fromarray(tile), (x0, y0 + text))
            x0 += tile.shape[1] + pad
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return atomic_write_bytes(out_png, buffer.getvalue())


def render_brain_preview(root: Path, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """One PNG per case (default: the first lesion-free and the first pathological subject) of a
    plain-layout brain phantom folder, written as out_dir/NAME.png."""
    root, out_dir = Path(root), Path(out_dir)
    meta_path = root / "phantom.json"
    if not meta_path.is_file():
        raise LeFusionError(f"{root}: no phantom.json; not a brain phantom folder")
    cases = json.loads(meta_path.read_text())["cases"]
    if names is None:
        names = [c["name"] for c in cases if c["split"] == "normal"][:1] + [c["name"] for c in cases if c["split"] == "pathological"][:1]
    written = []
    for name in names:
        paths = [root / sub / f"{name}.nii.gz" for sub in ("images", "masks", "organs")]
        if not paths[0].is_file():
            raise LeFusionError(f"{paths[0]}: file not found (the preview reads the plain layout)")
        written.append(render_brain_case(paths[0], out_dir / f"{name}.png", paths[1], paths[2]))
    return written
