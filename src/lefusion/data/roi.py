"""Cut a volume to the network's ROI in [-1, 1] and put a generated ROI back in original units.

Forward (`prepare_roi`): intensity map to [-1, 1] (CT: clamp to the HU window, then linear; MRI:
min-max of the input volume), then centred crop/pad to `config.roi_shape`, as torchio's CropOrPad
does in the public release: per axis, with n = |target - size| voxels to remove or add,
ceil(n / 2) go at the START (low index) and floor(n / 2) at the end.

Padding value: -1 in the image (the minimum of the mapped range: air for CT, the darkest voxel for
MRI) and 0 (background) in the label. The public release pads with 0 after rescaling, i.e. mid-grey
(-300 HU for CT); -1 keeps padded borders looking like empty space.

Inverse (`restore_roi`): the ROI box is written back into a copy of the original array; voxels
outside the box are the original's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Modality, PreprocessConfig
from ..errors import LeFusionError
from ..io import Volume

PAD_VALUE = -1.0  # image padding, in [-1, 1] units


@dataclass(frozen=True)
class IntensityMapping:
    """Linear map of original units [lo, hi] onto [-1, 1] (values outside [lo, hi] are clamped).

    CT: (lo, hi) = the HU window. MRI: (lo, hi) = (min, max) of the input volume, or the brain's
    robust percentiles (`brain_percentile_mapping`).
    """

    modality: Modality
    lo: float
    hi: float

    def forward(self, values: np.ndarray) -> np.ndarray:
        """Original units -> [-1, 1] (float64)."""
        clipped = np.clip(np.asarray(values, dtype=np.float64), self.lo, self.hi)
        return (clipped - self.lo) / (self.hi - self.lo) * 2.0 - 1.0

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """[-1, 1] -> original units (float64); inputs are clamped to [-1, 1] first."""
        clipped = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
        return (clipped + 1.0) / 2.0 * (self.hi - self.lo) + self.lo


@dataclass(frozen=True)
class RoiBox:
    """Where the ROI sits relative to the original (D, H, W) grid, per axis (z, y, x).

    crop_before[a]: original voxels dropped at the start of axis a; pad_before[a]: ROI voxels added
    at the start of axis a. At most one of the two is non-zero per axis.
    """

    original_shape: tuple[int, int, int]
    roi_shape: tuple[int, int, int]
    crop_before: tuple[int, int, int]
    pad_before: tuple[int, int, int]

    @classmethod
    def centred(cls, original_shape: tuple[int, ...], roi_shape: tuple[int, ...]) -> RoiBox:
        crop, pad = [], []
        for size, target in zip(original_shape, roi_shape):
            excess = size - target
            # ceil at the start, floor at the end, as torchio.CropOrPad does.
            crop.append(math.ceil(excess / 2) if excess > 0 else 0)
            pad.append(math.ceil(-excess / 2) if excess < 0 else 0)
        return cls(tuple(original_shape), tuple(roi_shape), tuple(crop), tuple(pad))  # type: ignore[arg-type]

    def slices(self) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(original-grid slices, ROI-grid slices) of the overlap, each (z, y, x)."""
        src, dst = [], []
        for size, target, c, p in zip(self.original_shape, self.roi_shape, self.crop_before, self.pad_before):
            n = min(size, target)
            src.append(slice(c, c + n))
            dst.append(slice(p, p + n))
        return tuple(src), tuple(dst)


@dataclass(frozen=True, eq=False)
class Roi:
    """One preprocessed case.

    image: (1, D, H, W) float32 in [-1, 1]; label: (1, D, H, W) int64 label ids (zeros when the case
    has no label); mapping and box invert the preprocessing (see `restore_roi`); box is None for a
    lesion's box cut from a whole scan (`lefusion.data.regions`, which keeps its own geometry).
    """

    image: torch.Tensor
    label: torch.Tensor
    mapping: IntensityMapping
    box: RoiBox | None
    image_path: Path | None = None
    axes: tuple[int, int, int] = (0, 1, 2)


def brain_region(array: np.ndarray) -> np.ndarray:
    """Where the brain is when no brain mask is given: the non-zero voxels of a skull-stripped
    scan; when (almost) nothing is zero (skull, background noise), Otsu's threshold of the
    intensities splits the head from the air. bool (D, H, W)."""
    foreground = array > 0
    if foreground.mean() < 0.9:
        return foreground
    values = array[np.isfinite(array)].astype(np.float64)
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total_w, total_m = weight[-1], mean[-1]
    inner = weight * (total_w - weight)
    between = np.where(inner > 0, (total_m * weight / total_w - mean) ** 2 * total_w / np.maximum(inner, 1), 0.0)
    return array > centres[int(np.argmax(between))]


def brain_percentile_mapping(
    array: np.ndarray, config: PreprocessConfig, brain: np.ndarray | None = None, where: str | Path | None = None
) -> IntensityMapping:
    """FLAIR-style normalisation of one scan (see `PreprocessConfig`): lo / hi from the
    `config.percentiles` of the intensities inside `brain` (bool, the scan's shape; e.g. an organ
    map > 0), else inside `brain_region(array)`. LeFusionError naming `where` for an empty or
    constant brain."""
    region = brain_region(array) if brain is None else np.asarray(brain, dtype=bool)
    if region.shape != array.shape:
        raise LeFusionError(f"{where or 'image'}: brain mask of shape {region.shape} does not match the scan's {array.shape}")
    values = array[region]
    if values.size == 0:
        raise LeFusionError(f"{where or 'image'}: no brain voxels (nothing above 0, no brain mask) to normalise the intensities by")
    p_lo, p_hi = (float(v) for v in np.percentile(values, config.percentiles))
    if not p_hi > p_lo:
        raise LeFusionError(f"{where or 'image'}: the brain's intensities are constant ({p_lo:g}); cannot normalise them")
    return IntensityMapping("mri", p_lo, p_hi + config.headroom * (p_hi - p_lo))


def intensity_mapping(image: Volume, config: PreprocessConfig, image_path: str | Path | None = None) -> IntensityMapping:
    """The mapping `prepare_roi` uses for this image. MRI min-max spans the whole input volume
    (the release rescales before cropping); a constant MRI volume has no range and is an error.
    MRI with `config.mri_intensity == "brain-percentiles"`: `brain_percentile_mapping`."""
    if config.modality == "mri" and config.mri_intensity == "brain-percentiles":
        return brain_percentile_mapping(image.array, config, where=image_path)
    if config.modality == "ct":
        lo, hi = config.window
        if not hi > lo:
            raise LeFusionError(f"CT window {config.window} is empty: the upper bound must exceed the lower")
        return IntensityMapping("ct", lo, hi)
    if config.modality == "mri":
        lo, hi = float(np.min(image.array)), float(np.max(image.array))
        if not hi > lo:
            raise LeFusionError(f"{image_path or 'image'}: constant intensity {lo:g}; cannot min-max rescale an MRI volume with no range")
        return IntensityMapping("mri", lo, hi)
    raise LeFusionError(f"unknown modality {config.modality!r}; use 'ct' or 'mri'")


def prepare_roi(
    image: Volume,
    label: Volume | None,
    config: PreprocessConfig,
    *,
    image_path: str | Path | None = None,
    label_path: str | Path | None = None,
) -> Roi:
    """Map `image` to [-1, 1] and crop/pad image and label (centred) to `config.roi_shape`.

    image.array, label.array: (D, H, W). Returns a Roi with image (1, *roi_shape) float32 and
    label (1, *roi_shape) int64. Padding: image -1 (minimum of the mapped range), label 0.
    """
    if image.array.ndim != 3:
        raise LeFusionError(f"{image_path or 'image'}: expected a (D, H, W) volume, got shape {image.array.shape}")
    if label is not None and label.shape != image.shape:
        raise LeFusionError(f"{label_path or 'label'}: shape {label.shape} differs from image {image_path or ''} shape {image.shape}")
    mapping = intensity_mapping(image, config, image_path)
    array = image.array.transpose(config.axes)  # disk order -> the model's (D, H, W)
    box = RoiBox.centred(array.shape, config.roi_shape)
    src, dst = box.slices()

    roi_image = np.full(config.roi_shape, PAD_VALUE, dtype=np.float32)
    roi_image[dst] = mapping.forward(array[src])
    roi_label = np.zeros(config.roi_shape, dtype=np.int64)
    if label is not None:
        roi_label[dst] = np.rint(label.array.transpose(config.axes)[src]).astype(np.int64)
    return Roi(
        image=torch.from_numpy(roi_image)[None],
        label=torch.from_numpy(roi_label)[None],
        mapping=mapping,
        box=box,
        image_path=Path(image_path) if image_path is not None else None,
        axes=config.axes,
    )


def restore_roi(roi: Roi, generated: torch.Tensor, original: Volume) -> np.ndarray:
    """Put a generated ROI back into the original volume, in original units.

    generated: (1, D, H, W) or (D, H, W) in [-1, 1] on the ROI grid (values are clamped to [-1, 1]).
    original: the Volume `roi` was prepared from. Returns an array of the original shape and dtype
    `result_type(original dtype, float32)` (int16 HU -> float32), so outside-box voxels are exact.

    Inside the box, a voxel whose generated value equals `roi.image` exactly (background the sampler
    kept) gets the original voxel back, so a clamped HU value outside the CT window, or MRI
    intensities, survive bit for bit; every other voxel gets the inverse intensity map. Voxels the
    ROI padded are dropped.
    """
    gen = generated.detach().to("cpu", torch.float32)
    if gen.ndim == 4 and gen.shape[0] == 1:
        gen = gen[0]
    if tuple(gen.shape) != roi.box.roi_shape:
        raise LeFusionError(
            f"{roi.image_path or 'ROI'}: generated ROI has shape {tuple(generated.shape)}, expected (1, {', '.join(map(str, roi.box.roi_shape))})"
        )
    array = original.array.transpose(roi.axes)
    if array.shape != roi.box.original_shape:
        raise LeFusionError(
            f"{roi.image_path or 'ROI'}: original volume has shape {original.shape}, but the ROI was cut from {roi.box.original_shape}"
        )
    src, dst = roi.box.slices()
    out = array.astype(np.result_type(array.dtype, np.float32), copy=True)
    gen_np = gen.numpy()[dst]
    kept = gen_np == roi.image[0].numpy()[dst]
    restored = roi.mapping.inverse(gen_np).astype(out.dtype)
    out[src] = np.where(kept, out[src], restored)
    return out.transpose(np.argsort(roi.axes))  # back to disk order


def validate_pair(
    image: Volume,
    label: Volume | None,
    lesion_labels: tuple[int, ...],
    allowed_labels: tuple[int, ...] | None,
    image_path: str | Path,
    label_path: str | Path | None,
    require_lesion: bool = True,
) -> None:
    """Check an image/label pair before training or inpainting; raise LeFusionError naming the files.

    Checks: NaN/Inf in the image; shape and geometry (spacing, origin, direction) agreement;
    non-integer label values; label values outside `allowed_labels` (0 is always allowed; None
    means 0 plus `lesion_labels`); no voxel of any lesion label when `require_lesion`.
    """
    array = image.array
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise LeFusionError(f"{image_path}: contains {int((~np.isfinite(array)).sum())} NaN/Inf voxels")
    if label is None:
        if require_lesion:
            raise LeFusionError(f"{image_path}: no label given, but a lesion mask is required")
        return
    pair = f"{image_path} and {label_path}"
    if label.shape != image.shape:
        raise LeFusionError(f"{pair}: shape mismatch, image {image.shape} vs label {label.shape}")
    if not image.geometry.matches(label.geometry):
        g, h = image.geometry, label.geometry
        raise LeFusionError(
            f"{pair}: geometry mismatch (spacing {g.spacing} vs {h.spacing}, origin {g.origin} vs {h.origin}, "
            f"direction {g.direction} vs {h.direction})"
        )
    values = np.unique(label.array)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or not np.all(values == np.round(values)):
            bad = [float(v) for v in values if not np.isfinite(v) or v != np.round(v)][:5]
            raise LeFusionError(f"{label_path}: label has non-integer values {bad}; expected integer label ids")
    allowed = set(lesion_labels) if allowed_labels is None else set(allowed_labels)
    allowed.add(0)
    unknown = sorted(int(v) for v in values if int(v) not in allowed)
    if unknown:
        raise LeFusionError(f"{label_path}: unknown label values {unknown}; allowed labels are {sorted(allowed)}")
    if require_lesion and not np.isin(values.astype(np.int64), np.asarray(lesion_labels, dtype=np.int64)).any():
        raise LeFusionError(f"{label_path}: empty lesion mask, no voxel has a lesion label {tuple(lesion_labels)}")


def to_source_dtype(restored: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Cast a `restore_roi` result back to the original array's dtype (integers rounded and clipped),
    so generated files keep the source's voxel type and untouched voxels keep their exact values."""
    if np.issubdtype(original.dtype, np.integer):
        info = np.iinfo(original.dtype)
        return np.clip(np.rint(restored), info.min, info.max).astype(original.dtype)
    return restored.astype(original.dtype)
