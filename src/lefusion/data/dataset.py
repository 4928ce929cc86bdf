"""In-memory training dataset of lesion ROIs, and the release's flip augmentation.

LeFusion datasets are small (a few thousand 32x64x64 ROIs at most; whole scans give one ROI per
lesion), so every case is read,
validated and preprocessed once at construction and kept as tensors: errors surface before
training starts, and workers never touch the disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..config import PreprocessConfig
from ..errors import LeFusionError
from ..io import Volume, read_volume
from .histograms import lesion_histogram
from .labels import class_masks
from .layouts import Case
from .regions import check_fits, cut_region, find_lesions, region_box, scan_mapping, uses_whole_volume
from .roi import Roi, prepare_roi, validate_pair

# Keys of a sample that carry voxels and so must flip together; `hist` is flip-invariant.
SPATIAL_KEYS = ("x", "masks", "label")


class LesionRoiDataset(Dataset):
    """Preprocessed lesion ROIs: one item per ROI-sized case, or per lesion of a whole scan.

    Item: dict(
        x=(K, D, H, W) float32 in [-1, 1], the image repeated over K = len(lesion_labels) channels,
        masks=(K, D, H, W) float32, channel i = (label == lesion_labels[i]),
        label=(1, D, H, W) int64 label ids,
        hist=(K * hist_bins,) float32 concatenated class histograms,
        name=str case name; a whole scan's lesion k is "NAME#k", k from 1).

    Every case is cut as one centred ROI (the release's ROI datasets: LIDC, EMIDEC), unless
    `whole_scans` is set (plain and nnU-Net folders of whole scans): then a case that is not
    already an ROI (it does not fit `config.roi_shape` at the model's spacing:
    `regions.uses_whole_volume`) gives one box per lesion (`regions.cut_region`, at `config.spacing` or the scan's own grid), the way generation
    cuts them; a whole scan without lesions gives none and lesions bigger than the box are left
    out (`skipped` counts them). Pathological ROI cases must contain a lesion voxel inside the ROI;
    normal cases may have no mask (label all zeros, histogram zeros). `allowed_labels` None means
    0 plus `lesion_labels` (pass e.g. (1, 2, 3, 4) for EMIDEC, whose labels also mark LV cavity and
    myocardium).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        config: PreprocessConfig,
        lesion_labels: tuple[int, ...],
        allowed_labels: tuple[int, ...] | None = None,
        whole_scans: bool = False,
    ) -> None:
        if not cases:
            raise LeFusionError("no cases given to build a dataset from")
        if not lesion_labels:
            raise LeFusionError("at least one lesion label is required")
        self.config = config
        self.whole_scans = whole_scans
        self.lesion_labels = tuple(int(v) for v in lesion_labels)
        self.allowed_labels = None if allowed_labels is None else tuple(int(v) for v in allowed_labels)
        self.cases: list[Case] = []  # per item (a whole scan's case once per lesion)
        self.names: list[str] = []
        self.rois: list[Roi] = []
        self.spacings: list[tuple[float, float, float]] = []  # per item, mm, in the model's (D, H, W) order
        self.skipped = 0
        for case in cases:
            for name, roi, spacing in self._load(case):
                self.cases.append(case)
                self.names.append(name)
                self.rois.append(roi)
                self.spacings.append(spacing)
        if not self.rois:
            raise LeFusionError(f"no lesion ROIs in the {len(cases)} case(s) given (first: {cases[0].image}); every mask is empty")
        hists = [lesion_histogram(roi.image, roi.label, self.lesion_labels, config.hist_bins) for roi in self.rois]
        self.hists = torch.stack(hists)  # (N, K * bins), also the input to histogram-preset clustering

    def _load(self, case: Case) -> list[tuple[str, Roi, tuple[float, float, float]]]:
        image = read_volume(case.image)
        label = read_volume(case.mask) if case.mask is not None else None
        require_lesion = case.role == "pathological"
        if self.whole_scans and label is not None and not uses_whole_volume(image, self.config):
            validate_pair(image, label, self.lesion_labels, self.allowed_labels, case.image, case.mask, require_lesion=False)
            return self._load_regions(case, image, label)
        validate_pair(image, label, self.lesion_labels, self.allowed_labels, case.image, case.mask, require_lesion)
        roi = prepare_roi(image, label, self.config, image_path=case.image, label_path=case.mask)
        if require_lesion and not torch.isin(roi.label, torch.tensor(self.lesion_labels)).any():
            raise LeFusionError(
                f"{case.mask}: the lesion lies entirely outside the centred {self.config.roi_shape} ROI "
                f"cut from a {image.shape} volume; re-centre the ROI on the lesion"
            )
        return [(case.name, roi, tuple(float(image.geometry.spacing[a]) for a in self.config.axes))]

    def _load_regions(self, case: Case, image: Volume, label: Volume) -> list[tuple[str, Roi, tuple[float, float, float]]]:
        """One ROI per lesion of a whole scan, cut as generation cuts them."""
        lesions = find_lesions(label.array, self.lesion_labels)
        if not lesions:
            return []
        try:
            mapping = scan_mapping(image, self.config)
        except LeFusionError as exc:
            raise LeFusionError(f"{case.image}: {exc}") from exc
        items = []
        for lesion in lesions:
            box = region_box(image.geometry, lesion, self.config)
            try:
                check_fits(image.geometry, lesion, box, str(case.mask))
            except LeFusionError:
                self.skipped += 1  # a lesion bigger than the model's box cannot be learnt whole
                continue
            region = cut_region(image, label.array, lesion, self.config, mapping=mapping)
            spacing = tuple(float(box.geometry.spacing[a]) for a in self.config.axes)
            items.append((f"{case.name}#{lesion.index + 1}", region.roi, spacing))
        return items

    def __len__(self) -> int:
        return len(self.rois)

    @property
    def common_spacing(self) -> tuple[float, float, float] | None:
        """The voxel size (mm, model order) all cases share, or None when they differ (then a model
        trained on them takes each scan's own grid)."""
        first = self.spacings[0]
        same = all(all(abs(a - b) <= 1e-3 * max(abs(b), 1e-6) for a, b in zip(s, first)) for s in self.spacings)
        return first if same else None

    def __getitem__(self, index: int) -> dict:
        roi = self.rois[index]
        k = len(self.lesion_labels)
        return {
            "x": roi.image.repeat(k, 1, 1, 1),
            "masks": class_masks(roi.label[None], self.lesion_labels)[0],
            "label": roi.label.clone(),
            "hist": self.hists[index].clone(),
            "name": self.names[index],
        }


def random_flip(batch: dict, generator: torch.Generator) -> dict:
    """Flip each sample of a collated batch along y (dim -2) with probability 0.5.

    batch: dict with x (B, K, D, H, W), masks (B, K, D, H, W), label (B, 1, D, H, W), ...; one coin
    per sample from `generator` (B draws, in batch order) decides for all its spatial tensors, so
    image, masks and label stay aligned. The public release flips the same in-plane axis
    (tio.RandomFlip(axes=1)). Returns a new dict; other entries (hist, name) are passed through.
    """
    present = [key for key in SPATIAL_KEYS if key in batch]
    if not present:
        raise ValueError(f"batch has none of the spatial keys {SPATIAL_KEYS}")
    size = batch[present[0]].shape[0]
    return flip_samples(batch, torch.rand(size, generator=generator, device=generator.device) < 0.5)


def flip_samples(batch: dict, flip: torch.Tensor) -> dict:
    """Flip the samples of a collated batch where flip (B,) bool is True along y (dim -2); every
    spatial tensor of a sample flips together. Returns a new dict; other entries pass through."""
    present = [key for key in SPATIAL_KEYS if key in batch]
    if not present:
        raise ValueError(f"batch has none of the spatial keys {SPATIAL_KEYS}")
    size = flip.shape[0]
    out = dict(batch)
    for key in present:
        tensor = batch[key]
        if tensor.shape[0] != size or tensor.ndim < 3:
            raise ValueError(f"batch[{key!r}] has shape {tuple(tensor.shape)}, expected batch size {size} first")
        choose = flip.to(tensor.device).view(size, *([1] * (tensor.ndim - 1)))
        out[key] = torch.where(choose, tensor.flip(-2), tensor)
    return out
