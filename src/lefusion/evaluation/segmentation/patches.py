"""Training patches from whole scans, the way nnU-Net draws them.

A whole chest does not fit a training batch, and almost all of it is background, so a segmenter is
trained on patches: each sample of a batch picks a scan at random, and with probability
`foreground_fraction` (nnU-Net: 1/3) centres its patch on a random lesion voxel (shifted by up to a
quarter of the patch so the lesion is not always in the middle), otherwise anywhere in the scan.
A scan without lesions always gives a random patch. Patches that reach past the scan are padded
with 0 (the normalised mean, as nnU-Net pads) and label 0; then each axis is flipped with
probability 1/2. Every draw comes from the generator passed in, so a (seed, iteration) gives the
same batch on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .train import random_flips


@dataclass(frozen=True)
class ScanSample:
    """One whole scan in memory. image: (D, H, W) float32, normalised; lesion: (D, H, W) uint8
    0/1; spacing (z, y, x) mm; lesion_voxels: (K, 3) int64 indices of the lesion voxels."""

    name: str
    image: np.ndarray
    lesion: np.ndarray
    spacing: tuple[float, float, float]
    lesion_voxels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3), np.int64))

    @classmethod
    def of(cls, name: str, image: np.ndarray, lesion: np.ndarray, spacing: tuple[float, float, float]) -> ScanSample:
        return cls(name, image, lesion, spacing, np.argwhere(lesion > 0))


def crop_padded(array: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """array[start : start + shape] per axis, zero where the box leaves the array. (D, H, W) -> shape."""
    out = np.zeros(tuple(shape), dtype=array.dtype)
    src = tuple(slice(max(s, 0), min(s + n, dim)) for s, n, dim in zip(start, shape, array.shape))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
    if all(a.stop > a.start for a in src):
        out[dst] = array[src]
    return out


class PatchSampler:
    """`sampler(generator)` -> images (B, 1, *patch_shape) float32, labels (B, 1, *patch_shape)
    uint8 (module docstring); a `train_network` batch source."""

    def __init__(self, scans: Sequence[ScanSample], patch_shape: tuple[int, int, int], batch_size: int, foreground_fraction: float = 1 / 3):
        if not scans:
            raise ValueError("no scans to draw patches from")
        self.scans, self.patch_shape, self.batch_size = list(scans), tuple(patch_shape), batch_size
        self.foreground_fraction = foreground_fraction

    def _start(self, scan: ScanSample, generator: torch.Generator) -> list[int]:
        patch = np.asarray(self.patch_shape)
        on_lesion = float(torch.rand((), generator=generator)) < self.foreground_fraction
        if on_lesion and len(scan.lesion_voxels):
            voxel = scan.lesion_voxels[int(torch.randint(len(scan.lesion_voxels), (), generator=generator))]
            jitter = [int(torch.randint(-(n // 4), n // 4 + 1, (), generator=generator)) for n in patch]
            centre = voxel + np.asarray(jitter)
        else:
            centre = np.asarray([int(torch.randint(dim, (), generator=generator)) for dim in scan.image.shape])
        return [int(c - n // 2) for c, n in zip(centre, patch)]

    def __call__(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(self.batch_size):
            scan = self.scans[int(torch.randint(len(self.scans), (), generator=generator))]
            start = self._start(scan, generator)
            images.append(torch.from_numpy(crop_padded(scan.image, start, self.patch_shape)))
            labels.append(torch.from_numpy(crop_padded(scan.lesion, start, self.patch_shape)))
        return random_flips(torch.stack(images)[:, None], torch.stack(labels)[:, None], generator)
