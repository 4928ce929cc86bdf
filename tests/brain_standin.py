"""A tiny stand-in for the brain phantom (branch `brain`), in its on-disk contract: ellipsoid
"brains" with the phantom's label scheme (organs: 0 outside, 1 CSF, 2 grey matter, 3 white
matter), FLAIR-like intensities (CSF dark, white matter below grey matter, lesions bright) and
1-3 spherical white-matter lesions per scan (masks: 1 = lesion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lefusion.io import Geometry, Volume, write_volume

STANDIN_SHAPE = (18, 22, 18)
FLAIR = {0: 0.0, 1: 150.0, 2: 520.0, 3: 430.0}  # outside, CSF, grey, white matter
LESION = 820.0


def standin_case(rng: np.random.Generator, shape=STANDIN_SHAPE, lesions: int | None = None):
    """-> image float32, mask uint8, organs uint8 arrays (D, H, W) of one random ellipsoid brain."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    radii = np.array(shape) * rng.uniform(0.36, 0.44, 3)
    r = np.sqrt((((grid - centre) / radii) ** 2).sum(-1))
    organs = np.zeros(shape, np.uint8)
    organs[r < 1.0] = 2  # cortex shell
    organs[r < 0.75] = 3  # white matter
    organs[r < 0.25] = 1  # ventricles
    mask = np.zeros(shape, np.uint8)
    wm = np.argwhere(organs == 3)
    for _ in range(rng.integers(1, 4) if lesions is None else lesions):
        c = wm[rng.integers(len(wm))]
        ball = ((grid - c) ** 2).sum(-1) <= rng.uniform(1.0, 2.2) ** 2
        mask[ball & (organs == 3)] = 1
    image = np.vectorize(FLAIR.get)(organs).astype(np.float32)
    image[mask > 0] = LESION
    image += (rng.normal(0, 20, shape) * (organs > 0)).astype(np.float32)
    return image, mask, organs


def write_standin(root: Path, n: int, seed: int = 0, spacing=(2.0, 2.0, 2.0), organs: bool = True) -> Path:
    """n cases brain_000.. under root/images, masks (and organs); returns root."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(spacing=tuple(spacing), origin=(-18.0, -22.0, -18.0))
    for i in range(n):
        image, mask, labels = standin_case(rng)
        name = f"brain_{i:03d}.nii.gz"
        write_volume(Volume(image, geometry), root / "images" / name)
        write_volume(Volume(mask, geometry), root / "masks" / name)
        if organs:
            write_volume(Volume(labels, geometry), root / "organs" / name)
    return root
