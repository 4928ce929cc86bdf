"""PNG views of a chest phantom case for a human look: axial, coronal and sagittal planes through a
nodule (or the carina level for a lesion-free scan), in a lung window (W 1500 / L -600) and a
mediastinal window (W 400 / L 40), drawn in the radiological convention (patient's right on the
image's left, anterior / superior at the top) with square pixels in mm."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError
from ..io import atomic_write_bytes, read_volume
from .chest_labels import LUNG

WINDOWS = {"lung": (-1350.0, 150.0), "mediastinum": (-160.0, 240.0)}
_LUNG_EDGE, _NODULE_EDGE = (80, 170, 255), (255, 60, 60)


def _canonical(array: np.ndarray, direction: tuple[float, ...]) -> np.ndarray:
    """Flip array axes whose direction points against the LPS axis they mostly follow (flipped and
    RAS-stored scans then show like identity ones; an oblique grid is shown as stored)."""
    d = np.asarray(direction).reshape(3, 3)  # columns: index axes x, y, z in world space
    flips = tuple(slice(None, None, -1) if d[np.argmax(np.abs(d[:, c])), c] < 0 else slice(None) for c in (2, 1, 0))
    return array[flips]


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice at `index` along `axis` (0 axial, 1 coronal, 2 sagittal), display orientation."""
    cut = np.take(volume, index, axis=axis)
    if axis == 0:
        return cut  # rows anterior -> posterior, columns right -> left
    if axis == 1:
        return cut[::-1]  # rows superior -> inferior, columns right -> left
    return cut[::-1]  # rows superior -> inferior, columns anterior -> posterior


def _rgb(
    image: np.ndarray, labels: np.ndarray | None, mask: np.ndarray | None, window: tuple[float, float], scale: tuple[float, float]
) -> np.ndarray:
    lo, hi = window
    grey = ndimage.zoom(np.clip((image.astype(np.float32) - lo) / (hi - lo), 0, 1), scale, order=1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    for region, colour in ((labels, _LUNG_EDGE), (mask, _NODULE_EDGE)):
        if region is None:
            continue
        big = ndimage.zoom(region.astype(np.uint8), scale, order=0).astype(bool)
        rgb[big & ~ndimage.binary_erosion(big)] = colour
    return rgb


def render_chest_case(
    image_path: Path, out_png: Path, mask_path: Path | None = None, organs_path: Path | None = None, mm_per_pixel: float = 0.8
) -> Path:
    """Write a 2 x 3 PNG (lung / mediastinal window x axial / coronal / sagittal) of one scan,
    with lung outlines (blue, from the organ labels) and nodules (red) on the lung-window row."""
    from PIL import Image, ImageDraw

    vol = read_volume(image_path)
    image = _canonical(vol.array, vol.geometry.direction)
    mask = _canonical(read_volume(mask_path).array, vol.geometry.direction) > 0 if mask_path else None
    organs = _canonical(read_volume(organs_path).array, vol.geometry.direction) if organs_path else None
    lungs = np.isin(organs, LUNG) if organs is not None else None
    if mask is not None and mask.any():
        parts, n = ndimage.label(mask)
        largest = int(np.argmax(np.bincount(parts.ravel())[1:])) + 1
        centre = [int(round(c)) for c in ndimage.center_of_mass(parts == largest)]
    elif lungs is not None and lungs.any():
        zc = int(np.argmax(lungs.sum(axis=(1, 2))))
        centre = [zc, *(int(round(c)) for c in ndimage.center_of_mass(lungs[zc]))]
        centre[2] = int(np.nonzero(lungs[zc].any(axis=0))[0].min() + 0.25 * np.ptp(np.nonzero(lungs[zc].any(axis=0))[0]))
    else:
        centre = [n // 2 for n in image.shape]
    sz, sy, sx = vol.geometry.spacing
    scales = {
        0: (sy / mm_per_pixel, sx / mm_per_pixel),
        1: (sz / mm_per_pixel, sx / mm_per_pixel),
        2: (sz / mm_per_pixel, sy / mm_per_pixel),
    }
    rows = []
    for window in ("lung", "mediastinum"):
        tiles = []
        for axis in (0, 1, 2):
            cut = [_plane(a, axis, centre[axis]) if a is not None else None for a in (image, lungs, mask)]
            show = (cut[1], cut[2]) if window == "lung" else (None, None)
            tiles.append(_rgb(cut[0], *show, WINDOWS[window], scales[axis]))
        rows.append(tiles)
    pad, text = 6, 16
    widths = [t.shape[1] for t in rows[0]]
    height = max(t.shape[0] for t in rows[0])
    sheet = Image.new("RGB", (sum(widths) + pad * 4, 2 * (height + text) + pad * 3), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (window, tiles) in enumerate(zip(("lung", "mediastinum"), rows)):
        x0 = pad
        for axis, tile in enumerate(tiles):
            y0 = pad + r * (height + text + pad)
            draw.text((x0, y0), f"{window} {('axial', 'coronal', 'sagittal')[axis]} #{centre[axis]}", fill=(230, 230, 230))
            sheet.paste(Image.fromarray(tile), (x0, y0 + text))
            x0 += tile.shape[1] + pad
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return atomic_write_bytes(out_png, buffer.getvalue())


def render_chest_preview(root: Path, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """One PNG per case (default: the first lesion-free and the first pathological scan) of a
    chest phantom folder, written as out_dir/NAME.png."""
    root, out_dir = Path(root), Path(out_dir)
    meta_path = root / "phantom.json"
    if not meta_path.is_file():
        raise LeFusionError(f"{root}: no phantom.json; not a chest phantom folder")
    cases = json.loads(meta_path.read_text())["cases"]
    if names is None:
        names = [c["name"] for split in ("normal", "pathological") for c in cases if c["split"] == split][:1]
        names += [c["name"] for c in cases if c["split"] == "pathological"][:1]
    written = []
    for name in names:
        paths = [root / sub / f"{name}.nii.gz" for sub in ("images", "masks", "organs")]
        if not paths[0].is_file():
            raise LeFusionError(f"{paths[0]}: file not found")
        written.append(render_chest_case(paths[0], out_dir / f"{name}.png", paths[1], paths[2]))
    return written
