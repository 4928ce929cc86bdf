"""What the generation pipeline and its methods exchange: settings, jobs, results, the method interface."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..data.conventions import DataConventions
from ..data.layouts import Case
from ..data.regions import ImageInterpolation, MaskResampling
from ..data.roi import Roi
from ..diffusion.sampling import SamplerConfig


@dataclass(frozen=True)
class GenerateConfig:
    """Output variants, seed and sampler of a run. `sampler` None is the method's own default:
    LeFusion the published time travel (jump length 10, 10 repeats: 2,910 network evaluations at
    T = 300), Cond-Diffusion ancestral DDPM; the non-learned baselines do not sample."""

    presets: tuple[str, ...] = ("mix",)
    seed: int = 0
    texture_class: str | None = None  # asked for by class: `presets` holds the checkpoint's preset for it
    sampler: SamplerConfig | None = None
    # whole scans: how a lesion's box is resampled to the model's spacing (`lefusion.data.regions`)
    interpolation: ImageInterpolation = "linear"
    mask_resampling: MaskResampling = "volume"
    batch_size: int = 4
    device: str = "auto"
    previews: bool = True
    max_cases: int | None = None


@dataclass(frozen=True)
class Job:
    """One output: a case, a variant spec (a preset, 'mix', a histogram file, a baseline's tag),
    the output's file name stem and its own seed (`output_seed`)."""

    case: Case
    spec: str
    name: str
    seed: int


@dataclass(frozen=True, eq=False)
class Generated:
    """One method output: roi (1, D, H, W) float32 in [-1, 1] on the ROI grid (the input ROI
    outside the lesion, unless the method's preserves_background is False), record:
    method-specific manifest fields (condition, donor, sampler cost, ...)."""

    roi: torch.Tensor
    record: dict[str, Any] = field(default_factory=dict)


Tick = Callable[[], None]


class RoiGenerator(Protocol):
    """A generation method as the pipeline sees it.

    method: its name in manifests; conventions: ROI preprocessing and lesion labels;
    preserves_background: True if every voxel outside the lesion masks comes back unchanged (the
    pipeline then checks that on every output), False for a method that regenerates the whole ROI
    (Cond-Diffusion; only the voxels outside the ROI box are then checked);
    label_hint: what to add to a label error (which labels the method expects and why);
    variants(config): the output variants per case (e.g. texture presets; their tags name files);
    settings(): what, besides the data, presets and seed, makes two runs' outputs differ (an output
    folder refuses to resume under other settings); header(): extra top-level manifest entries;
    steps(n): progress-bar units for a batch of n; __call__(jobs, rois, tick): one Generated per job,
    calling tick() once per progress unit. Outputs must depend on each job's seed only, never on
    which jobs share its batch.
    """

    method: str
    conventions: DataConventions
    label_hint: str
    preserves_background: bool

    def variants(self, config: GenerateConfig) -> tuple[str, ...]: ...
    def settings(self) -> dict[str, Any]: ...
    def header(self) -> dict[str, Any]: ...
    def steps(self, n: int) -> int: ...
    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]: ...


def output_seed(seed: int, case_name: str, spec: str) -> int:
    """A per-output seed from the run seed and the output's identity (case name and variant), so
    an output depends neither on batching nor on which other cases a run holds. `lefusion generate`
    and `LeFusionModel.inpaint` both derive their randomness from it."""
    return (seed * 2_654_435_761 + zlib.crc32(f"{case_name}|{spec}".encode())) % (2**63)
