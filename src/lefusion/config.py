"""Typed, frozen configuration records, saved as JSON next to every checkpoint and generated dataset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Modality = Literal["ct", "mri"]
# How MRI intensities reach [-1, 1]: min-max of each ROI (the release's EMIDEC convention), or
# robust percentiles of the whole scan's brain (FLAIR: `roi.brain_percentile_mapping`).
MriIntensity = Literal["roi-minmax", "brain-percentiles"]
MRI_INTENSITIES: tuple[str, ...] = ("roi-minmax", "brain-percentiles")
# What a checkpoint is, named once in its config: a LeFusion lesion model (also the RePaint
# baseline: the same network trained with the global loss), the Cond-Diffusion baseline (masks +
# masked image as input channels, regenerates the whole ROI), a DiffMask mask model, or a
# Lesion-DDPM whole-volume model (the whole scan generated from its anatomy + lesion mask).
ModelKind = Literal["lefusion", "cond-diffusion", "diffmask", "lesion-ddpm"]
MODEL_KINDS: tuple[str, ...] = ("lefusion", "cond-diffusion", "diffmask", "lesion-ddpm")
# What the network outputs: the noise eps (DDPM and the published models), the clean sample x0, or
# v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022).
Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of the 3D U-Net denoiser (same hyper-parameters as the public LeFusion `Unet3D`).

    `dim` is the base width; the published LIDC model uses 64 and the EMIDEC model 72 (the release
    set it equal to the ROI's in-plane size). `cond_dim` is the length of the histogram condition
    (16 bins per lesion class) or None for an unconditional model.
    """

    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    channels: int = 1
    cond_dim: int | None = 16
    attn_heads: int = 8
    attn_dim_head: int = 32
    init_kernel_size: int = 7
    resnet_groups: int = 8
    # Extra input channels concatenated to x that the network does not predict (e.g. DiffMask's
    # control sphere). 0 for the published models.
    extra_in_channels: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        if self.dim % 2:
            raise ValueError(f"dim must be even for the sinusoidal time embedding, got {self.dim}")
        if self.init_kernel_size % 2 == 0:
            raise ValueError(f"init_kernel_size must be odd, got {self.init_kernel_size}")
        for width in [self.dim * m for m in self.dim_mults]:
            if width % self.resnet_groups:
                raise ValueError(f"width {width} is not divisible by resnet_groups={self.resnet_groups}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Noise schedule: cosine (Nichol & Dhariwal 2021, eq. 17) with offset `s`, T steps, betas clipped."""

    timesteps: int = 300
    kind: Literal["cosine"] = "cosine"
    cosine_s: float = 0.008
    max_beta: float = 0.9999

    def __post_init__(self) -> None:
        if self.kind != "cosine":
            raise ValueError(f"unknown noise schedule {self.kind!r}; only 'cosine' is implemented")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")


@dataclass(frozen=True)
class PreprocessConfig:
    """How an ROI is cut and scaled to the network's [-1, 1] range, and how to map it back.

    CT: clamp to `window` (HU) and map linearly to [-1, 1]. MRI (`mri_intensity`): "roi-minmax",
    min-max of each ROI to [-1, 1]; or "brain-percentiles", one map per scan from the `percentiles`
    (e.g. 0.5 / 99.5) of its intensities inside the brain, the upper end raised by `headroom` x
    their range so lesions brighter than the normal brain (MS lesions on FLAIR) are not clipped:
    lo = p_lo, hi = p_hi + headroom * (p_hi - p_lo), [lo, hi] -> [-1, 1], recorded for the inverse.
    `roi_shape` is (D, H, W) = (z, y, x) in voxels; `spacing` the voxel size in mm the model was
    trained at, in the same order, or None for a model that takes each scan's own grid (EMIDEC's
    slices). On whole scans every lesion's box is resampled to it (`lefusion.data.regions`).
    """

    modality: Modality = "ct"
    roi_shape: tuple[int, int, int] = (32, 64, 64)
    window: tuple[float, float] = (-1000.0, 400.0)
    hist_bins: int = 16
    # Permutation from the array as read from disk (SimpleITK order: slice, row, column = k, j, i)
    # to the model's (D, H, W). Identity for models trained with lefusion. The published models
    # were fed torchio tensors: LIDC as (i, j, k) -> (2, 1, 0); EMIDEC as (k, i, j) -> (0, 2, 1).
    axes: tuple[int, int, int] = (0, 1, 2)
    spacing: tuple[float, float, float] | None = None
    mri_intensity: MriIntensity = "roi-minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)
    headroom: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "roi_shape", tuple(int(s) for s in self.roi_shape))
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        if self.mri_intensity not in MRI_INTENSITIES:
            raise ValueError(f"unknown mri_intensity {self.mri_intensity!r}; expected one of {MRI_INTENSITIES}")
        if self.mri_intensity != "roi-minmax" and self.modality != "mri":
            raise ValueError(f"mri_intensity {self.mri_intensity!r} is for MRI; a {self.modality} model uses its window")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must be 0 <= low < high <= 100, got {self.percentiles}")
        if not 0.0 <= self.headroom <= 10.0:
            raise ValueError(f"headroom must be in [0, 10], got {self.headroom}")
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
            if len(self.spacing) != 3 or not all(v > 0 for v in self.spacing):
                raise ValueError(f"spacing must be three positive sizes in mm (D, H, W), got {self.spacing}")
        object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))
        if sorted(self.axes) != [0, 1, 2]:
            raise ValueError(f"axes must be a permutation of (0, 1, 2), got {self.axes}")
        object.__setattr__(self, "window", tuple(float(v) for v in self.window))


@dataclass(frozen=True)
class VolumeConfig:
    """How a Lesion-DDPM model (kind "lesion-ddpm") sees a whole scan (`lefusion.data.volumes`).

    volume_shape: the fixed model grid (D, H, W) every scan's brain box is resampled to.
    anatomy_labels: the organ label ids that get a condition channel each (brain phantom: 1 CSF,
    2 grey matter, 3 white matter); () = the dataset has no organs/: one brain-mask channel
    (image > 0) instead. The lesion mask is the last channel. margin_mm: space around the brain's
    bounding box. percentiles: (lo, hi) of the brain's intensities mapped to -1 and +1.
    reference: (lo, hi) intensities in source units used to map generated volumes back (the
    median over the training scans: generation never reads an image), background: the value of
    every voxel outside the brain. lesion_weight: lambda of the loss weight 1 + lambda * lesion.
    """

    volume_shape: tuple[int, int, int] = (48, 56, 48)
    anatomy_labels: tuple[int, ...] = (1, 2, 3)
    margin_mm: float = 4.0
    percentiles: tuple[float, float] = (0.5, 99.9)
    reference: tuple[float, float] = (0.0, 1.0)
    background: float = 0.0
    lesion_weight: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "volume_shape", tuple(int(v) for v in self.volume_shape))
        object.__setattr__(self, "anatomy_labels", tuple(int(v) for v in self.anatomy_labels))
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        object.__setattr__(self, "reference", tuple(float(v) for v in self.reference))
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 1:
            raise ValueError(f"volume_shape must be three positive sizes (D, H, W), got {self.volume_shape}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must be 0 <= lo < hi <= 100, got {self.percentiles}")
        if self.lesion_weight < 0:
            raise ValueError(f"lesion_weight must be >= 0 (weight 1 + lambda * lesion), got {self.lesion_weight}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")

    @property
    def condition_channels(self) -> int:
        """Condition channels: one per anatomy label (or one brain mask), then the lesion mask."""
        return max(1, len(self.anatomy_labels)) + 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to use a trained model: kind, network, schedule, data conventions, presets.

    `kind` says which model this is (see ModelKind); code asks it rather than guessing from channel
    counts. `lesion_labels[i]` is the label id of lesion class i, which lives in channel i (LIDC:
    (1,); EMIDEC: (3, 4) = MI, PMO). `hist_presets` are texture-control presets: each a list of
    `len(lesion_labels) * hist_bins` floats (class histograms concatenated).
    """

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    lesion_labels: tuple[int, ...] = (1,)
    # Non-lesion labels that may appear in masks and are kept as background (EMIDEC: 1 = LV
    # cavity, 2 = myocardium). Any other label in a mask is an error.
    context_labels: tuple[int, ...] = ()
    hist_presets: tuple[tuple[float, ...], ...] = ()
    # The training loss: lesion-focused (LeFusion) or global (RePaint, Cond-Diffusion, DiffMask).
    loss: Literal["lesion", "global"] = "lesion"
    source: str = ""
    # The network also sees the lesion masks: K extra input channels after x_t, class i's mask as
    # -1 outside / +1 inside (lefusion.diffusion.channels). Not in the public release (False for
    # its checkpoints): without the mask a network cannot tell at high noise where the lesion is,
    # so it cannot place structure relative to it, e.g. a part-solid nodule's central core.
    mask_input: bool = False
    kind: ModelKind = "lefusion"
    prediction: Prediction = "eps"
    # Whole-volume settings of a lesion-ddpm model (None for every other kind).
    volume: VolumeConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lesion_labels", tuple(int(v) for v in self.lesion_labels))
        object.__setattr__(self, "context_labels", tuple(int(v) for v in self.context_labels))
        object.__setattr__(self, "hist_presets", tuple(tuple(float(v) for v in p) for p in self.hist_presets))
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {MODEL_KINDS}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {PREDICTIONS}")
        if self.loss not in ("lesion", "global"):
            raise ValueError(f"unknown loss {self.loss!r}; expected 'lesion' or 'global'")
        den = self.denoiser
        if den.channels != len(self.lesion_labels):
            raise ValueError(
                f"the denoiser has {den.channels} channel(s) but {len(self.lesion_labels)} "
                f"lesion label(s) {self.lesion_labels}: one channel per lesion class is required"
            )
        if self.mask_input and self.kind != "lefusion":
            raise ValueError(f"mask_input is an option of lefusion models, not of {self.kind}")
        if (self.volume is not None) != (self.kind == "lesion-ddpm"):
            raise ValueError("a lesion-ddpm model needs its volume settings, and only a lesion-ddpm model has them")
        if self.volume is not None and den.cond_dim is not None:
            raise ValueError(f"a lesion-ddpm model takes no histogram condition (cond_dim None), got cond_dim={den.cond_dim}")
        expected = self.volume.condition_channels if self.volume is not None else context_channels(self.kind, den.channels, self.mask_input)
        if self.mask_input and den.extra_in_channels != expected:
            raise ValueError(
                f"mask_input needs one extra input channel per lesion class ({expected}), the denoiser has {den.extra_in_channels}"
            )
        if den.extra_in_channels != expected:
            raise ValueError(
                f"a {self.kind} model{' with mask input' if self.mask_input else ''} with {den.channels} channel(s) "
                f"takes {expected} extra input channel(s), the denoiser has {den.extra_in_channels}"
            )
        for i, preset in enumerate(self.hist_presets):
            if den.cond_dim is not None and len(preset) != den.cond_dim:
                raise ValueError(f"histogram preset {i + 1} has {len(preset)} values, expected {den.cond_dim}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def allowed_labels(self) -> tuple[int, ...]:
        """Every label id a mask may contain: background 0, context labels, lesion labels."""
        return tuple(sorted({0, *self.context_labels, *self.lesion_labels}))

    @classmethod
    def from_dict(cls, data: dict[str, Any], extra: dict[str, Any] | None = None) -> ModelConfig:
        """Inverse of `to_dict`. A record written before `kind` and `prediction` existed gets them
        from `extra` (the checkpoint's metadata) or its channel layout: the one place they are inferred."""
        denoiser = DenoiserConfig(**data.get("denoiser", {}))
        mask_input = bool(data.get("mask_input", False))
        extra = extra or {}
        return cls(
            denoiser=denoiser,
            schedule=ScheduleConfig(**data.get("schedule", {})),
            preprocess=PreprocessConfig(**data.get("preprocess", {})),
            lesion_labels=tuple(data.get("lesion_labels", (1,))),
            context_labels=tuple(data.get("context_labels", ())),
            hist_presets=tuple(tuple(p) for p in data.get("hist_presets", ())),
            loss=data.get("loss", "lesion"),
            source=data.get("source", ""),
            mask_input=mask_input,
            kind=data.get("kind") or legacy_kind(denoiser, mask_input, extra),
            prediction=data.get("prediction") or extra.get("diffmask", {}).get("prediction", "eps"),
            volume=VolumeConfig(**data["volume"]) if data.get("volume") else None,
        )


def context_channels(kind: str, n_classes: int, mask_input: bool = False) -> int:
    """Input channels a model of `kind` takes besides x_t: a mask-input LeFusion model its K class
    masks, Cond-Diffusion K masks + the masked image, DiffMask its control region, else none."""
    if kind == "cond-diffusion":
        return n_classes + 1
    if kind == "diffmask":
        return 1
    return n_classes if mask_input else 0


def legacy_kind(denoiser: DenoiserConfig, mask_input: bool, extra: dict[str, Any]) -> str:
    """The kind of a checkpoint written before configs named it: its metadata says (extra
    'cond_diffusion' / 'diffmask'), else its channel layout (published .pt files)."""
    if "cond_diffusion" in extra:
        return "cond-diffusion"
    if "diffmask" in extra:
        return "diffmask"
    extra_in = denoiser.extra_in_channels
    if extra_in == 0 or mask_input:
        return "lefusion"
    if denoiser.channels == 1 and extra_in == 1:
        return "diffmask"  # the published diffmask.pt: mask + control sphere in, mask out
    return "cond-diffusion"


# Layout defaults; spacing None = each scan's own grid (a checkpoint records the spacing it was
# trained at; the published LIDC model: 1 mm, `checkpoints.loading.legacy_model_config`).
LIDC_PREPROCESS = PreprocessConfig(modality="ct", roi_shape=(32, 64, 64))
EMIDEC_PREPROCESS = PreprocessConfig(modality="mri", roi_shape=(10, 72, 72))
# Brain FLAIR (the brain phantom's default): MS lesions of 3-15 mm, one map per scan from the brain's percentiles.
BRAIN_PREPROCESS = PreprocessConfig(modality="mri", roi_shape=(16, 32, 32), mri_intensity="brain-percentiles")
