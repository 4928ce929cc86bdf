"""Read labelled cases into normalised arrays, the way nnU-Net normalises them, and pad them.

Normalisation (nnU-Net's per-modality defaults):
- CT: clip to the 0.5 / 99.5 percentiles of the foreground (label > 0) intensities of the real
  training cases, then z-score with the mean / std of those foreground intensities. The statistics
  come from the real training cases only, so every setting sees the same test-time inputs and the
  comparison isolates the effect of the added training data.
- MRI: per-case z-score over the whole volume (MRI intensities have no absolute scale); with
  `nonzero` (skull-stripped brains), over the non-zero voxels only, the zero background staying 0
  (nnU-Net's `use_mask_for_norm`: the head's empty surround would otherwise dominate the statistics).

Labels are mapped from label ids to class indices 0..K-1 (index into `LabelScheme.all_labels`), so
the segmenter predicts every structure the labels mark (EMIDEC: cavity and myocardium as well as
MI and PMO; the anatomy gives the lesion classes context), while only lesion classes are scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.roi import validate_pair
from ...data.sources import LabelScheme, Modality
from ...errors import LeFusionError
from ...io import read_volume


@dataclass(frozen=True)
class Sample:
    """One case in memory. image: (D, H, W) float32, normalised; label: (D, H, W) uint8 class
    indices; spacing: (z, y, x) voxel size in mm."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class Normaliser:
    """nnU-Net-style intensity normalisation (see module docstring). CT uses the fitted numbers;
    MRI needs none (each case is z-scored on its own, over its non-zero voxels when `nonzero`)."""

    modality: Modality
    lower: float = 0.0
    upper: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    nonzero: bool = False

    @classmethod
    def fit(cls, modality: Modality, pairs: Iterable[tuple[np.ndarray, np.ndarray]], nonzero: bool = False) -> Normaliser:
        """Fit on (image, label id) arrays of the real training cases; only CT needs statistics."""
        if modality == "mri":
            return cls("mri", nonzero=nonzero)
        foreground = np.concatenate([image[label > 0].astype(np.float64).ravel() for image, label in pairs])
        if foreground.size == 0:
            raise LeFusionError("the real training cases have no labelled voxel; cannot fit the CT intensity normalisation")
        lower, upper = np.percentile(foreground, (0.5, 99.5))
        return cls("ct", float(lower), float(upper), float(foreground.mean()), float(max(foreground.std(), 1e-8)))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(D, H, W) original units -> (D, H, W) float32 normalised."""
        image = image.astype(np.float64)
        if self.modality == "ct":
            return ((np.clip(image, self.lower, self.upper) - self.mean) / self.std).astype(np.float32)
        if not self.nonzero:
            return ((image - image.mean()) / max(float(image.std()), 1e-8)).astype(np.float32)
        inside = image != 0
        if not inside.any():
            raise LeFusionError("an MRI scan is zero everywhere; nothing to normalise")
        values = image[inside]
        normalised = np.zeros(image.shape, dtype=np.float32)
        normalised[inside] = (values - values.mean()) / max(float(values.std()), 1e-8)
        return normalised


@dataclass(frozen=True)
class RawCase:
    """One case as read: image (D, H, W) in original units, label (D, H, W) int64 label ids,
    spacing (z, y, x) in mm."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def read_case(name: str, image_path: Path, label_path: Path, scheme: LabelScheme) -> RawCase:
    """Read one case and check it: shape and geometry of image and label agree, labels are integer
    ids of `scheme` (LeFusionError naming the files otherwise)."""
    image, label = read_volume(image_path), read_volume(label_path)
    validate_pair(image, label, scheme.lesion_labels, scheme.all_labels, image_path, label_path, require_lesion=False)
    spacing = tuple(float(s) for s in image.geometry.spacing)
    return RawCase(name, image.array, np.rint(label.array).astype(np.int64), spacing)  # type: ignore[arg-type]


def read_cases(pairs: Sequence[tuple[str, Path, Path]], scheme: LabelScheme) -> list[RawCase]:
    """(name, image path, label path) for each case -> RawCase list (all validated before returning)."""
    return [read_case(name, image, label, scheme) for name, image, label in pairs]


def to_classes(label: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Label ids (D, H, W) -> class indices (D, H, W) uint8 (ids already validated against the scheme)."""
    return np.searchsorted(np.asarray(scheme.all_labels), label).astype(np.uint8)


def to_samples(cases: Sequence[RawCase], scheme: LabelScheme, normaliser: Normaliser) -> list[Sample]:
    """Normalised images and class-index labels of `cases`."""
    return [Sample(c.name, normaliser(c.image), to_classes(c.label, scheme), c.spacing) for c in cases]


def largest_shape(samples: Iterable[Sample]) -> tuple[int, int, int]:
    """The smallest (D, H, W) box that holds every sample."""
    return tuple(int(v) for v in np.max(np.asarray([s.image.shape for s in samples]), axis=0))  # type: ignore[return-value]


def stack_padded(samples: Sequence[Sample], shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples -> images (N, 1, *shape) float32 and labels (N, 1, *shape) uint8, each case at the
    start of the grid; padding is 0 in both (the normalised mean, and background), as nnU-Net pads."""
    images = torch.zeros((len(samples), 1, *shape), dtype=torch.float32)
    labels = torch.zeros((len(samples), 1, *shape), dtype=torch.uint8)
    for i, sample in enumerate(samples):
        d, h, w = sample.image.shape
        images[i, 0, :d, :h, :w] = torch.from_numpy(sample.image)
        labels[i, 0, :d, :h, :w] = torch.from_numpy(sample.label)
    return images, labels
