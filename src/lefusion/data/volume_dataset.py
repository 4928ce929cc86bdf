"""The Lesion-DDPM training set: every scan on the model grid, held in memory.

A 48 x 56 x 48 grid is 0.5 MB per channel, so a few hundred scans fit easily; preprocessing once
keeps the training steps pure tensor work. Item i is a dict of
    x      (1, D, H, W) FLAIR in [-1, 1] (`volumes.to_unit`, resampled to the grid)
    cond   (E, D, H, W) condition in [-1, 1] (`volumes.model_condition`)
    lesion (1, D, H, W) lesion fraction in [0, 1] of each grid voxel (the loss weight's mask)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import VolumeConfig
from ..errors import LeFusionError
from ..io import read_volume
from .volumes import VolumeBox, VolumeCase, brain_box, intensity_window, model_condition, read_labels, to_model_grid, to_unit, volume_cases

TEST_SPLIT = "test.txt"


@dataclass
class WholeVolumeDataset:
    """Scans resampled to `config.volume_shape` (module docstring); `windows[i]` the (lo, hi) of scan
    i, `backgrounds[i]` its median value outside the brain, `boxes[i]` its brain box."""

    config: VolumeConfig
    names: list[str]
    x: torch.Tensor
    cond: torch.Tensor
    lesion: torch.Tensor
    windows: list[tuple[float, float]] = field(default_factory=list)
    backgrounds: list[float] = field(default_factory=list)
    boxes: list[VolumeBox] = field(default_factory=list)
    lesion_labels: tuple[int, ...] = (1,)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "cond": self.cond[i], "lesion": self.lesion[i]}

    def reference(self) -> tuple[tuple[float, float], float]:
        """The mapping back to source units for generated scans: median (lo, hi) and background."""
        lo, hi = np.median(np.array(self.windows), axis=0)
        return (float(lo), float(hi)), float(np.median(self.backgrounds))


def training_volume_cases(root: str | Path) -> list[VolumeCase]:
    """Every case of `root` except those named in root/test.txt (held out, as for `lefusion train`)."""
    root = Path(root)
    held_out: set[str] = set()
    if (root / TEST_SPLIT).is_file():
        held_out = {strip.strip().removesuffix(".nii.gz") for strip in (root / TEST_SPLIT).read_text().splitlines() if strip.strip()}
    cases = [c for c in volume_cases(root, need_image=True) if c.name not in held_out]
    if not cases:
        raise LeFusionError(f"{root}: no training cases (all are held out in {TEST_SPLIT})")
    return cases


def load_volume_dataset(root: str | Path, config: VolumeConfig) -> WholeVolumeDataset:
    """Read, check and resample every training case of `root` (errors name the file)."""
    cases = training_volume_cases(root)
    xs, conds, lesions, windows, backgrounds, boxes = [], [], [], [], [], []
    for case in cases:
        labels = read_labels(case, config)
        image = read_volume(case.image)
        if image.shape != labels.lesion.shape:
            raise LeFusionError(f"{case.image}: shape {image.shape} does not match its mask {case.mask} {labels.lesion.shape}")
        box = brain_box(labels.brain, labels.geometry.spacing, config.margin_mm)
        window = intensity_window(image.array, labels.brain, config.percentiles, case.image)
        xs.append(to_model_grid(to_unit(image.array, labels.brain, window), box, config.volume_shape))
        conds.append(model_condition(labels, config, box))
        lesions.append(to_model_grid(labels.lesion.astype(np.float32), box, config.volume_shape))
        outside = image.array[~labels.brain]
        backgrounds.append(float(np.median(outside)) if outside.size else window[0])
        windows.append(window)
        boxes.append(box)
    return WholeVolumeDataset(
        config, [c.name for c in cases], torch.stack(xs), torch.stack(conds), torch.stack(lesions), windows, backgrounds, boxes
    )
