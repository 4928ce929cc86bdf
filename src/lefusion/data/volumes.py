"""Whole scans for Lesion-DDPM: the condition (anatomy + lesion) and the image on a fixed model grid.

A dataset is the plain layout DIR/images/NAME (FLAIR, float), DIR/masks/NAME (1 = lesion; any
non-zero voxel counts as lesion) and, optionally, DIR/organs/NAME (anatomy: 0 outside the brain,
then the labels of `VolumeConfig.anatomy_labels`, brain phantom 1 CSF, 2 grey, 3 white matter).
The brain is organs > 0; without organs/ it is image > 0 (skull-stripped FLAIR): then only the
image's support, not its intensities, enters the condition.

Mapping to the model grid (`VolumeConfig.volume_shape`): the brain's bounding box, grown by
`margin_mm` and clipped to the scan, is resampled per axis to the grid (trilinear, half-voxel
centres, `align_corners=False`); the box and the scan's shape are recorded (`VolumeBox`) so a
generated volume goes back to that scan's voxels (`from_model_grid`). Each brain is thus scaled
to fill the grid, as an affine registration's scaling would; the model learns shapes relative to
the brain box.

Intensities: the (lo, hi) percentiles of the brain's voxels map linearly to -1 and +1, clamped;
outside the brain -1. Why 99.9 and not 99.5 by default: FLAIR lesions are the brightest tissue,
so the top 0.5 % of the brain is mostly lesion and would be clipped flat; at 99.9 at most 0.1 %
of the brain's voxels are.

Condition channels (E, D, H, W), each -1 outside / +1 inside: one per anatomy label (or the brain
mask), then the lesion. On the model grid a label's channel is resampled as its {0, 1} indicator
(trilinear = the label's fraction f of the coarse voxel), then coded 2 f - 1.
Arrays are numpy (D, H, W) = (z, y, x) as read by `lefusion.io`; tensors (C, D, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import VolumeConfig
from ..errors import LeFusionError
from ..io import Geometry, Volume, read_volume, strip_volume_suffix
from .layouts import _volume_files


@dataclass(frozen=True)
class VolumeCase:
    """One whole scan: its lesion mask, optional anatomy map and image (None: not needed or absent)."""

    name: str
    mask: Path
    organs: Path | None = None
    image: Path | None = None


@dataclass(frozen=True)
class VolumeBox:
    """Where the model grid sits in a scan: voxel box [start, stop) per axis (D, H, W), the scan's shape."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    scan_shape: tuple[int, int, int]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def to_record(self) -> dict:
        return {"start": list(self.start), "stop": list(self.stop), "scan_shape": list(self.scan_shape)}


def volume_cases(root: str | Path, need_image: bool) -> list[VolumeCase]:
    """The cases of a whole-scan dataset, sorted by name.

    need_image: training (every case needs images/NAME). Without it (generation) cases are named by
    images/ if present (each must have its mask), else by masks/; the image is then only looked up
    where there is no organs/ folder (its support is the brain mask). Errors name the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise LeFusionError(f"{root}: dataset folder not found")
    masks, organs, images = root / "masks", root / "organs", root / "images"
    if not masks.is_dir():
        raise LeFusionError(f"{root}: no masks/ folder; Lesion-DDPM needs DIR/masks/NAME.nii.gz (1 = lesion) for every case")
    if need_image and not images.is_dir():
        raise LeFusionError(f"{root}: no images/ folder; training needs DIR/images/NAME.nii.gz for every case")
    named_by = _volume_files(images) if images.is_dir() else _volume_files(masks)
    if not named_by:
        raise LeFusionError(f"{root}: no cases found (no volumes in {'images' if images.is_dir() else 'masks'}/)")
    cases = []
    for path in named_by:
        mask = masks / path.name
        if not mask.is_file():
            raise LeFusionError(f"{images / path.name}: case without a lesion mask (expected {mask})")
        organ = organs / path.name if organs.is_dir() else None
        if organ is not None and not organ.is_file():
            raise LeFusionError(f"{mask}: case without an anatomy map (expected {organ}; {organs} exists, so every case needs one)")
        image = images / path.name if images.is_dir() else None
        if image is not None and not image.is_file():
            image = None
        if organ is None and image is None:
            raise LeFusionError(f"{mask}: no organs/ and no image: the brain mask (image > 0) cannot be made")
        cases.append(VolumeCase(strip_volume_suffix(path.name), mask, organ, image))
    return sorted(cases, key=lambda c: c.name)


def _same_grid(a: Volume, b: Volume, path_a: Path, path_b: Path) -> None:
    if a.shape != b.shape:
        raise LeFusionError(f"{path_b}: shape {b.shape} does not match {path_a} {a.shape}; they must be on the same grid")
    if not a.geometry.matches(b.geometry, tol=1e-3):
        raise LeFusionError(
            f"{path_b}: geometry (spacing {b.geometry.spacing}, origin {b.geometry.origin}) does not match {path_a} "
            f"(spacing {a.geometry.spacing}, origin {a.geometry.origin}); they must be on the same grid"
        )


@dataclass
class ScanLabels:
    """A case's labels on its own grid: lesion (bool), anatomy (int, or None), brain (bool), geometry."""

    lesion: np.ndarray
    anatomy: np.ndarray | None
    brain: np.ndarray
    geometry: Geometry
    mask_volume: Volume
    organs_volume: Volume | None


def read_labels(case: VolumeCase, config: VolumeConfig) -> ScanLabels:
    """Read and check a case's mask and anatomy (or brain from its image's support)."""
    mask = read_volume(case.mask)
    lesion = mask.array != 0
    organs = anatomy = None
    if config.anatomy_labels and case.organs is None:
        raise LeFusionError(
            f"{case.mask}: this model is conditioned on anatomy labels {config.anatomy_labels} but the case has no organs/ map"
        )
    if case.organs is not None:  # read also for a brain-mask model: organs > 0 is its brain, without the image
        organs = read_volume(case.organs)
        _same_grid(mask, organs, case.mask, case.organs)
        anatomy = np.rint(organs.array).astype(np.int64)
        unknown = sorted(set(np.unique(anatomy).tolist()) - {0, *config.anatomy_labels})
        if config.anatomy_labels and unknown:
            raise LeFusionError(f"{case.organs}: labels {unknown[:5]} are not anatomy labels of this model (0, {config.anatomy_labels})")
        brain = anatomy > 0
    else:
        if case.image is None:
            raise LeFusionError(f"{case.mask}: the model takes a brain mask (image > 0) but the case has no image")
        image = read_volume(case.image)
        _same_grid(mask, image, case.mask, case.image)
        brain = image.array > 0
    if not brain.any():
        raise LeFusionError(f"{case.organs or case.image}: the brain is empty (no voxel > 0)")
    outside = lesion & ~brain
    if outside.any():
        raise LeFusionError(f"{case.mask}: {int(outside.sum())} lesion voxel(s) lie outside the brain")
    return ScanLabels(lesion, anatomy, brain, mask.geometry, mask, organs)


def brain_box(brain: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> VolumeBox:
    """Bounding box of the brain (D, H, W) grown by margin_mm per side, clipped to the scan."""
    idx = np.nonzero(brain)
    start, stop = [], []
    for axis, n in enumerate(brain.shape):
        pad = int(np.ceil(margin_mm / spacing[axis]))
        start.append(max(0, int(idx[axis].min()) - pad))
        stop.append(min(n, int(idx[axis].max()) + 1 + pad))
    return VolumeBox(tuple(start), tuple(stop), tuple(brain.shape))  # type: ignore[arg-type]


def to_model_grid(array: np.ndarray, box: VolumeBox, shape: tuple[int, int, int]) -> torch.Tensor:
    """(D, H, W) or (C, D, H, W) scan array -> (C, *shape) float32: the box, trilinearly resampled."""
    data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    data = data[None] if data.ndim == 3 else data
    crop = data[(slice(None), *box.slices())][None]
    return F.interpolate(crop, size=tuple(shape), mode="trilinear", align_corners=False)[0]


def from_model_grid(x: torch.Tensor, box: VolumeBox, fill: float) -> np.ndarray:
    """(D', H', W') model-grid values -> (scan shape) float32: resampled to the box, `fill` around it."""
    inside = F.interpolate(x.detach().float().cpu()[None, None], size=box.size, mode="trilinear", align_corners=False)[0, 0]
    out = np.full(box.scan_shape, fill, dtype=np.float32)
    out[box.slices()] = inside.numpy()
    return out


def condition_indicators(labels: ScanLabels, config: VolumeConfig) -> np.ndarray:
    """(E, D, H, W) {0, 1} float32 on the scan grid: one per anatomy label (or the brain), then the lesion."""
    if config.anatomy_labels:
        planes = [labels.anatomy == a for a in config.anatomy_labels]
    else:
        planes = [labels.brain]
    return np.stack([*planes, labels.lesion]).astype(np.float32)


def model_condition(labels: ScanLabels, config: VolumeConfig, box: VolumeBox) -> torch.Tensor:
    """(E, *volume_shape) condition in [-1, 1] (module docstring): 2 * label fraction - 1."""
    return to_model_grid(condition_indicators(labels, config), box, config.volume_shape) * 2 - 1


def intensity_window(image: np.ndarray, brain: np.ndarray, percentiles: tuple[float, float], source: Path) -> tuple[float, float]:
    """(lo, hi) percentiles of the brain's voxels; an error naming the file if they coincide."""
    lo, hi = (float(v) for v in np.percentile(image[brain], percentiles))
    if not hi > lo:
        raise LeFusionError(f"{source}: the brain's intensities are constant ({lo}); cannot scale them")
    return lo, hi


def to_unit(image: np.ndarray, brain: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Source units -> [-1, 1]: window (lo, hi) -> (-1, 1), clamped; outside the brain -1."""
    lo, hi = window
    out = np.clip((image.astype(np.float32) - lo) / (hi - lo) * 2 - 1, -1, 1)
    out[~brain] = -1.0
    return out


def from_unit(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """[-1, 1] -> source units, the inverse of `to_unit`'s linear map."""
    lo, hi = window
    return ((np.asarray(x, dtype=np.float32) + 1) / 2 * (hi - lo) + lo).astype(np.float32)
