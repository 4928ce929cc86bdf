"""PNG previews (pillow only): a per-case strip and the demo montage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_write_bytes


def lesion_slice(label: np.ndarray, lesion_labels: Sequence[int]) -> int:
    """Index of the z slice (axis 0 of a (D, H, W) array) with the most lesion voxels."""
    area = np.isin(label, list(lesion_labels)).sum(axis=(1, 2))
    return int(area.argmax()) if area.any() else label.shape[0] // 2


def to_gray(slice_2d: np.ndarray, lo: float = -1.0, hi: float = 1.0, scale: int = 3) -> Image.Image:
    """(H, W) values in [lo, hi] -> 8-bit grey image, upscaled by `scale` (nearest)."""
    img = np.clip((slice_2d - lo) / (hi - lo), 0, 1) * 255
    pil = Image.fromarray(img.astype(np.uint8), mode="L")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def mask_overlay(slice_2d: np.ndarray, mask_2d: np.ndarray, scale: int = 3) -> Image.Image:
    """Grey image with lesion voxels tinted red."""
    gray = np.clip((slice_2d + 1) / 2, 0, 1) * 255
    rgb = np.stack([gray] * 3, axis=-1)
    rgb[mask_2d > 0] = 0.5 * rgb[mask_2d > 0] + 0.5 * np.array([255, 0, 0])
    pil = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def grid_png(cells: Sequence[Sequence[Image.Image]], row_titles: Sequence[str], col_titles: Sequence[str], path: Path) -> Path:
    """Tile equally sized images into a titled grid and write it atomically as PNG."""
    import io

    h, w = cells[0][0].height, cells[0][0].width
    left, top, pad = 90, 18, 4
    canvas = Image.new("RGB", (left + len(cells[0]) * (w + pad), top + len(cells) * (h + pad)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(col_titles):
        draw.text((left + j * (w + pad) + 2, 3), title[: max(4, w // 6)], fill=(230, 230, 230))
    for i, row in enumerate(cells):
        draw.text((4, top + i * (h + pad) + h // 2 - 6), row_titles[i], fill=(230, 230, 230))
        for j, cell in enumerate(row):
            canvas.paste(cell.convert("RGB"), (left + j * (w + pad), top + i * (h + pad)))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def case_preview(image: np.ndarray, label: np.ndarray, generated: np.ndarray, lesion_labels: Sequence[int], path: Path) -> Path:
    """Original | mask | generated at the slice of largest lesion area; arrays (D, H, W) in [-1, 1]."""
    return lesions_preview([(image, label, generated)], lesion_labels, path)


def lesions_preview(rois: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], lesion_labels: Sequence[int], path: Path) -> Path:
    """One row per lesion ROI (image, label, generated; (D, H, W), [-1, 1]): original | mask |
    generated at the slice of largest lesion area."""
    cells, titles = [], []
    for i, (image, label, generated) in enumerate(rois):
        z = lesion_slice(label, lesion_labels)
        mask = np.isin(label[z], list(lesion_labels))
        cells.append([to_gray(image[z]), mask_overlay(image[z], mask), to_gray(generated[z])])
        titles.append(f"z={z}" if len(rois) == 1 else f"#{i + 1} z={z}")
    return grid_png(cells, titles, ["original", "mask", "generated"], path)
