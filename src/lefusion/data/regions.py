"""Per-lesion ROIs on whole scans: find the lesions, cut a box around each at the model's own
spacing, and write a generated box back into the scan, inside that lesion's voxels only.

A lesion is a connected component (26-connectivity) of the union of the lesion labels, so the
classes of a multi-class model (EMIDEC: MI with its PMO core) are generated together, one channel
each, as the model was trained. Its box has the ROI shape of the model at the model's spacing
(`PreprocessConfig.spacing`; None = the scan's own grid) and the scan's direction, centred on the
lesion's centroid; near the scan's edge the box reaches past it and is padded (-1, air), the lesion
is never shifted. When the box has the scan's spacing its voxels are the scan's voxels (integer
offset): cutting and pasting back copy values, nothing is interpolated.

Resampling: the image by linear interpolation (or cubic B-spline), the lesion mask either by
nearest neighbour or ("volume", the default) by keeping the k box voxels of largest interpolated
mask fraction, k = the lesion's volume / the box voxel volume, so the lesion keeps its volume
across spacings. Back on the scan's grid each lesion voxel takes the generated box linearly
interpolated at its centre. Every voxel outside the lesion is left as it is.

Arrays on disk order (z, y, x) = the source axis order; `PreprocessConfig.axes` permutes a cut box
into the model's (D, H, W), as for whole-volume ROIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from ..config import PreprocessConfig
from ..errors import LeFusionError
from ..io import Geometry, Volume
from .grid import grid_indices, index_to_world, inside, sample, world_to_index
from .roi import PAD_VALUE, IntensityMapping, Roi, brain_percentile_mapping, to_source_dtype

ImageInterpolation = Literal["linear", "bspline"]
MaskResampling = Literal["volume", "nearest"]
_ORDER = {"linear": 1, "bspline": 3}
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True, eq=False)
class Lesion:
    """One lesion of a scan: its voxels (N, 3) int64 (z, y, x) source indices and the lesion label
    ids among them; `index` is its 0-based place in the scan (order of first voxel in memory)."""

    index: int
    labels: tuple[int, ...]
    voxels: np.ndarray

    @property
    def centroid(self) -> np.ndarray:
        """(3,) continuous (z, y, x) index of the lesion's centre of mass."""
        return self.voxels.mean(axis=0)


def find_lesions(label: np.ndarray, lesion_labels: tuple[int, ...]) -> list[Lesion]:
    """Every lesion of a (D, H, W) label map: connected components of the lesion labels' union."""
    components, n = ndimage.label(np.isin(label, lesion_labels), structure=_CONNECTIVITY)
    lesions = []
    for k, box in enumerate(ndimage.find_objects(components)):
        local = components[box] == k + 1
        voxels = np.argwhere(local) + np.array([s.start for s in box])
        labels = tuple(int(v) for v in np.unique(label[box][local]))
        lesions.append(Lesion(k, labels, voxels.astype(np.int64)))
    return lesions


@dataclass(frozen=True)
class RegionBox:
    """A lesion's box: a grid of the model's ROI shape and spacing with the scan's direction, in the
    scan's axis order (`shape`, `geometry`); `axes` permutes it into the model's order; `offset` is
    the integer index of the box's first voxel in the scan when the box voxels are scan voxels."""

    geometry: Geometry
    shape: tuple[int, int, int]
    axes: tuple[int, int, int]
    offset: tuple[int, int, int] | None

    def to_record(self) -> dict:
        g = self.geometry
        return {
            "shape_zyx": list(self.shape),
            "spacing_zyx": list(g.spacing),
            "origin_xyz": [round(v, 4) for v in g.origin],
            "direction": list(g.direction),
            "aligned_offset_zyx": None if self.offset is None else list(self.offset),
        }


def _in_source_order(values: tuple, axes: tuple[int, int, int]) -> tuple:
    """Per-axis values in model order -> scan order (model axis i is scan axis axes[i])."""
    out = [None] * 3
    for i, a in enumerate(axes):
        out[a] = values[i]
    return tuple(out)


def uses_whole_volume(image: Volume, preprocess: PreprocessConfig) -> bool:
    """Whether a case is an ROI already: it fits the model's ROI and has the model's spacing (or the
    model has none). Such a case is cut as one centred ROI (`roi.prepare_roi`), exactly as before
    whole scans were supported; anything else gets one box per lesion."""
    shape = tuple(image.shape[a] for a in preprocess.axes)
    fits = all(s <= r for s, r in zip(shape, preprocess.roi_shape))
    spacing = tuple(image.geometry.spacing[a] for a in preprocess.axes)
    return fits and (preprocess.spacing is None or np.allclose(spacing, preprocess.spacing, rtol=1e-3, atol=1e-4))


def region_box(source: Geometry, lesion: Lesion, preprocess: PreprocessConfig) -> RegionBox:
    """The box of `lesion` (see module docstring)."""
    shape = _in_source_order(tuple(preprocess.roi_shape), preprocess.axes)
    spacing = source.spacing if preprocess.spacing is None else _in_source_order(tuple(preprocess.spacing), preprocess.axes)
    centre = lesion.centroid
    half = (np.asarray(shape, dtype=np.float64) - 1) / 2
    if np.allclose(spacing, source.spacing, rtol=1e-6, atol=1e-9):
        offset = np.rint(centre - half).astype(int)
        origin = index_to_world(source, offset.astype(np.float64))
        geometry = Geometry(tuple(source.spacing), tuple(float(v) for v in origin), source.direction)
        return RegionBox(geometry, shape, preprocess.axes, tuple(int(v) for v in offset))
    box = Geometry(tuple(float(v) for v in spacing), (0.0, 0.0, 0.0), source.direction)
    origin = index_to_world(source, centre) - (index_to_world(box, half) - np.asarray(box.origin))
    return RegionBox(Geometry(box.spacing, tuple(float(v) for v in origin), source.direction), shape, preprocess.axes, None)


def check_fits(source: Geometry, lesion: Lesion, box: RegionBox, where: str) -> None:
    """LeFusionError naming `where` when the lesion does not fit in its box."""
    index = world_to_index(box.geometry, index_to_world(source, lesion.voxels.astype(np.float64)))
    extent = index.max(axis=0) - index.min(axis=0) + 1
    if not inside(box.shape, index).all():
        mm = extent * np.asarray(box.geometry.spacing)
        raise LeFusionError(
            f"{where}: lesion {lesion.index + 1} ({len(lesion.voxels)} voxels, {mm[0]:.0f} x {mm[1]:.0f} x {mm[2]:.0f} mm in z, y, x) "
            f"does not fit the model's box of {box.shape} voxels at {tuple(round(s, 3) for s in box.geometry.spacing)} mm"
        )


@dataclass(frozen=True, eq=False)
class Region:
    """A lesion's ROI: `roi` in the model's order and units (label: this lesion's class ids only),
    `box` where it came from."""

    lesion: Lesion
    box: RegionBox
    roi: Roi


def _mask_in_box(lesion: Lesion, source: Geometry, box: RegionBox, source_index: np.ndarray, mode: MaskResampling) -> np.ndarray:
    """Bool (box shape) of the lesion in the box: nearest neighbour, or the k most-covered voxels."""
    lo = lesion.voxels.min(axis=0) - 2
    local = np.zeros(tuple(lesion.voxels.max(axis=0) - lo + 3), dtype=np.float32)
    local[tuple((lesion.voxels - lo).T)] = 1.0
    relative = source_index - lo
    if box.offset is not None or mode == "nearest":
        return (sample(local, relative, order=0) > 0.5) & inside(local.shape, relative)
    fraction = np.where(inside(local.shape, relative), sample(local, relative, order=1), 0.0)
    k = int(round(len(lesion.voxels) * float(np.prod(source.spacing)) / float(np.prod(box.geometry.spacing))))
    flat = fraction.ravel()
    order = np.argsort(-flat, kind="stable")[: max(k, 1)]
    mask = np.zeros(flat.shape, dtype=bool)
    mask[order[flat[order] > 0]] = True
    return mask.reshape(fraction.shape)


def cut_region(
    image: Volume,
    label: np.ndarray,
    lesion: Lesion,
    preprocess: PreprocessConfig,
    interpolation: ImageInterpolation = "linear",
    mask_mode: MaskResampling = "volume",
    mapping: IntensityMapping | None = None,
) -> Region:
    """The ROI of `lesion` from `image` (the scan as it is now: lesions generated before are part of
    it). label: the scan's label map, for the class ids of the lesion's voxels. mapping: the scan's
    intensity map when it is one per scan (`scan_mapping`: pass the source scan's, computed once,
    so every lesion of a scan is scaled alike); None = computed here."""
    box = region_box(image.geometry, lesion, preprocess)
    source_index = world_to_index(image.geometry, index_to_world(box.geometry, grid_indices(box.shape)))
    in_scan = inside(image.shape, source_index)
    values = sample(image.array, source_index, order=0 if box.offset is not None else _ORDER[interpolation])
    mapping = mapping or scan_mapping(image, preprocess) or _mapping(preprocess, values[in_scan])
    box_image = np.where(in_scan, mapping.forward(values), PAD_VALUE).astype(np.float32)
    mask = _mask_in_box(lesion, image.geometry, box, source_index, mask_mode)
    classes = np.where(mask, sample(label, source_index, order=0), 0).astype(np.int64)
    dominant = max(lesion.labels, key=lambda v: int((label[tuple(lesion.voxels.T)] == v).sum()))
    classes[mask & ~np.isin(classes, lesion.labels)] = dominant  # partial-volume voxels take the main class
    model = lambda a: np.ascontiguousarray(a.transpose(preprocess.axes))  # noqa: E731
    roi = Roi(torch.from_numpy(model(box_image))[None], torch.from_numpy(model(classes))[None], mapping, None, None, preprocess.axes)
    return Region(lesion, box, roi)


def scan_mapping(image: Volume, preprocess: PreprocessConfig, brain: np.ndarray | None = None) -> IntensityMapping | None:
    """The one intensity map of a whole scan when the preprocessing has one (MRI "brain-percentiles",
    from the brain's voxels: `brain` bool (D, H, W) if given, e.g. organ labels > 0); None when each
    box is scaled by itself (CT window, MRI per-ROI min-max)."""
    if preprocess.modality == "mri" and preprocess.mri_intensity == "brain-percentiles":
        return brain_percentile_mapping(image.array, preprocess, brain)
    return None


def _mapping(preprocess: PreprocessConfig, values: np.ndarray) -> IntensityMapping:
    """CT: the HU window; MRI (roi-minmax): min-max of the box's own voxels (never of the whole scan)."""
    if preprocess.modality == "ct":
        return IntensityMapping("ct", *preprocess.window)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if not hi > lo:
        raise LeFusionError("the lesion's box has constant intensity; cannot min-max rescale it")
    return IntensityMapping("mri", lo, hi)


def paste_region(target: np.ndarray, source: Geometry, region: Region, generated: torch.Tensor) -> None:
    """Write a generated ROI ((1, D, H, W) or (D, H, W), model order, [-1, 1]) into `target` (the
    scan's array, its dtype, modified in place) at the lesion's voxels only."""
    gen = generated.detach().to("cpu", torch.float32).numpy()
    gen = gen[0] if gen.ndim == 4 else gen
    gen = gen.transpose(np.argsort(region.box.axes))  # back to the scan's axis order
    voxels = region.lesion.voxels
    if region.box.offset is not None:
        values = gen[tuple((voxels - np.asarray(region.box.offset)).T)].astype(np.float64)
    else:
        index = world_to_index(region.box.geometry, index_to_world(source, voxels.astype(np.float64)))
        values = sample(gen, index, order=1)
    restored = region.roi.mapping.inverse(values)
    target[tuple(voxels.T)] = to_source_dtype(restored, target)
