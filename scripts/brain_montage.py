"""The brain benchmark's methods side by side: one lesion-free brain with the same placed lesions,
one row per method (axial and coronal slice through the most lesion voxels, plain and with the
placed masks in red). Reads a finished `scripts/brain_benchmark.py` work folder.

    python scripts/brain_montage.py outputs/brain-cpu docs/brain_methods.png [--case BRAIN-N002]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from lefusion.io import read_volume

METHODS = (
    ("lefusion", "LeFusion"),
    ("repaint", "RePaint"),
    ("cond-diffusion", "Cond-Diffusion"),
    ("lesion-ddpm", "Lesion-DDPM"),
    ("copy-paste", "Copy-Paste"),
    ("handcrafted", "Hand-Crafted"),
)
SCALE, PAD, TEXT = 3, 4, 14


def tile(slice2d: np.ndarray, lesion2d: np.ndarray, hi: float) -> np.ndarray:
    """(H*3, 2*W*3 + PAD, 3) uint8: the slice in grey (0..hi), then with the lesion contours in red."""
    grey = np.kron((np.clip(slice2d / hi, 0, 1) * 255).astype(np.uint8), np.ones((SCALE, SCALE), np.uint8))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    big = np.kron(lesion2d, np.ones((SCALE, SCALE), bool))
    over = rgb.copy()
    over[big & ~ndimage.binary_erosion(big)] = (255, 60, 60)
    return np.concatenate([rgb, np.zeros((rgb.shape[0], PAD, 3), np.uint8), over], axis=1)


def pad_to(t: np.ndarray, height: int) -> np.ndarray:
    return np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--case", default="BRAIN-N002")
    args = parser.parse_args()
    work, name = args.workdir, args.case
    rows = [("original (lesion-free)", work / "normal" / "images" / f"{name}.nii.gz")]
    for method, label in METHODS:
        hits = sorted((work / "gen" / method / "images").glob(f"{name}_*.nii.gz"))
        if hits:
            rows.append((label, hits[0]))
    lesion = read_volume(work / "placed" / "masks" / f"{name}.nii.gz").array > 0
    brain = read_volume(work / "normal" / "organs" / f"{name}.nii.gz").array > 0
    z, y = int(np.argmax(lesion.sum(axis=(1, 2)))), int(np.argmax(lesion.sum(axis=(0, 2))))
    tiles = []
    for label, path in rows:
        image = read_volume(path).array.astype(np.float64)
        hi = float(np.percentile(image[brain], 99.5))
        axial, coronal = tile(image[z], lesion[z], hi), tile(np.flipud(image[:, y]), np.flipud(lesion[:, y]), hi)
        height = max(axial.shape[0], coronal.shape[0])
        gap = np.zeros((height, PAD * 3, 3), np.uint8)
        tiles.append((label, np.concatenate([pad_to(axial, height), gap, pad_to(coronal, height)], axis=1)))
    width = max(t.shape[1] for _, t in tiles)
    sheet = Image.new("RGB", (width + 2 * PAD, sum(t.shape[0] + TEXT + PAD for _, t in tiles) + PAD), (30, 30, 30))
    draw, top = ImageDraw.Draw(sheet), PAD
    for label, t in tiles:
        draw.text(
            (PAD, top), f"{label}: {name}, axial z={z} and coronal y={y}, plain and with the placed lesions (red)", fill=(255, 255, 255)
        )
        sheet.paste(Image.fromarray(t), (PAD, top + TEXT))
        top += t.shape[0] + TEXT + PAD
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {sheet.size[0]} x {sheet.size[1]} px, {len(tiles)} rows")


if __name__ == "__main__":
    main()
