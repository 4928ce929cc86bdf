"""The PNG a user wants of an augmented whole scan: an overview row (the whole field of view in
axial, coronal and sagittal slices through the first new lesion, every new lesion outlined where
the slices cut it), then one row per new lesion, zoomed on it: axial before | axial, coronal and
sagittal after, with the lesion outlined. Slices are shown in the scan's voxel order (z up) with
square pixels, in a CT window (HU; the lung window W 1500 / L -600 for lung models) or the volume's
robust range (MRI)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..io import Geometry, atomic_write_bytes

OUTLINE = (255, 64, 48)
ZOOM_MM = 64.0  # side of the zoomed views
LUNG_WINDOW = (-1350.0, 150.0)  # HU: width 1500, level -600
CELL = 192  # pixels per zoomed view


def _plane(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice through `index` along `axis` (0 axial, 1 coronal, 2 sagittal), rows = z up for coronal/sagittal."""
    index = int(np.clip(index, 0, array.shape[axis] - 1))
    plane = np.take(array, index, axis=axis)
    return plane if axis == 0 else plane[::-1]


def _pixel_mm(geometry: Geometry, axis: int) -> tuple[float, float]:
    """(row, column) pixel size in mm of a slice along `axis`."""
    z, y, x = geometry.spacing
    return {0: (y, x), 1: (z, x), 2: (z, y)}[axis]


def _to_image(
    plane: np.ndarray, mask: np.ndarray | None, pixel_mm: tuple[float, float], size_mm: float, cell: int, window: tuple[float, float]
) -> Image.Image:
    """Grey slice (window), resampled to square pixels of size_mm / cell, outline of `mask` drawn."""
    lo, hi = window
    grey = (np.clip((plane.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    height = max(1, int(round(plane.shape[0] * pixel_mm[0] * cell / size_mm)))
    width = max(1, int(round(plane.shape[1] * pixel_mm[1] * cell / size_mm)))
    image = Image.fromarray(grey, mode="L").resize((width, height), Image.BILINEAR).convert("RGB")
    if mask is not None and mask.any():
        big = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
        edge = big & ~ndimage.binary_erosion(big, iterations=max(1, cell // 96))
        pixels = np.asarray(image).copy()
        pixels[edge] = OUTLINE
        image = Image.fromarray(pixels)
    return image


def _view(
    volume: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    axis: int,
    centre: np.ndarray,
    window: tuple[float, float],
    zoom: bool,
    outline: bool,
) -> Image.Image:
    plane, plane_mask = _plane(volume, axis, int(round(centre[axis]))), _plane(mask, axis, int(round(centre[axis])))
    pixel = _pixel_mm(geometry, axis)
    if not zoom:
        extent = max(plane.shape[0] * pixel[0], plane.shape[1] * pixel[1])
        return _to_image(plane, plane_mask if outline else None, pixel, extent, 2 * CELL, window)
    keep = [a for a in range(3) if a != axis]
    rows, cols = (keep[0], keep[1])
    r0 = centre[rows] if axis == 0 else volume.shape[rows] - 1 - centre[rows]
    half_r, half_c = ZOOM_MM / 2 / pixel[0], ZOOM_MM / 2 / pixel[1]
    # a fixed window around the lesion, padded where it leaves the scan, so every view has one size
    r_lo, c_lo = int(round(r0 - half_r)), int(round(centre[cols] - half_c))
    n_r, n_c = int(round(2 * half_r)) + 1, int(round(2 * half_c)) + 1
    pads = ((max(0, -r_lo), max(0, r_lo + n_r - plane.shape[0])), (max(0, -c_lo), max(0, c_lo + n_c - plane.shape[1])))
    plane, plane_mask = np.pad(plane, pads, constant_values=window[0]), np.pad(plane_mask, pads)
    rs, cs = slice(r_lo + pads[0][0], r_lo + pads[0][0] + n_r), slice(c_lo + pads[1][0], c_lo + pads[1][0] + n_c)
    return _to_image(plane[rs, cs], plane_mask[rs, cs] if outline else None, pixel, ZOOM_MM, CELL, window)


def _window(volume: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        return window
    lo, hi = np.percentile(volume[:: max(1, volume.size // 200_000)].ravel(), [1, 99.5])
    return float(lo), float(max(hi, lo + 1))


def scan_preview(
    before: np.ndarray,
    after: np.ndarray,
    new_lesions: Sequence[np.ndarray],
    geometry: Geometry,
    path: Path,
    window: tuple[float, float] | None = None,
) -> Path:
    """Write the PNG (module docstring). before, after: (D, H, W) scans in their units; new_lesions:
    per lesion its voxels (N, 3) (z, y, x); window: display range (CT: e.g. the HU lung window)."""
    window = _window(after, window)
    mask = np.zeros(after.shape, dtype=bool)
    for voxels in new_lesions:
        mask[tuple(np.asarray(voxels).T)] = True
    centres = [np.asarray(v).mean(axis=0) for v in new_lesions] or [np.asarray(after.shape) / 2]
    rows = [[_view(after, mask, geometry, axis, centres[0], window, zoom=False, outline=True) for axis in (0, 1, 2)]]
    for centre in centres[: len(new_lesions)]:
        cells = [_view(before, mask, geometry, 0, centre, window, zoom=True, outline=False)]
        cells += [_view(after, mask, geometry, axis, centre, window, zoom=True, outline=True) for axis in (0, 1, 2)]
        rows.append(cells)
    titles = ["overview: axial | coronal | sagittal"] + [
        f"lesion {i + 1}: axial before | axial | coronal | sagittal" for i in range(len(new_lesions))
    ]
    return _write(rows, titles, path)


def _write(rows: list[list[Image.Image]], titles: list[str], path: Path) -> Path:
    pad, title_h = 6, 16
    widths = [sum(c.width for c in row) + pad * (len(row) + 1) for row in rows]
    heights = [max(c.height for c in row) + title_h + pad for row in rows]
    canvas = Image.new("RGB", (max(widths), sum(heights) + pad), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for row, title, h in zip(rows, titles, heights):
        draw.text((pad, y), title, fill=(230, 230, 230))
        x = pad
        for cell in row:
            canvas.paste(cell, (x, y + title_h))
            x += cell.width + pad
        y += h
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
