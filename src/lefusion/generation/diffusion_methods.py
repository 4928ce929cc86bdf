"""The two diffusion methods of `lefusion generate`: LeFusion (background-preserving inpainting;
with a globally trained checkpoint also the RePaint baseline) and the Cond-Diffusion baseline.

Both take their conventions, presets and per-output conditions from the checkpoint and their
reverse process from a sampler (`GenerateConfig.sampler`, else the method's default), and record
the sampler and the network evaluations it made in the manifest.

Cond-Diffusion (`lefusion train --method cond-diffusion`) is a conditional DDPM whose network gets
the lesion masks and the masked image as extra input channels (`lefusion.diffusion.conditional`).
It returns what the model generated over the WHOLE ROI: nothing is pasted back inside the ROI box,
so how well the background survives is part of what the baseline shows. Its histogram condition is
LeFusion's, so `--preset` gives both methods the same variants and per-output conditions, and a
comparison isolates how the model is conditioned on the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data.conventions import DataConventions
from ..data.roi import Roi
from ..device import resolve_device
from ..diffusion.conditional import EXTRA_KEY, sample_cond_diffusion
from ..diffusion.inpainting import inpaint_lesions
from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import DEFAULT, Ancestral, SamplerConfig
from ..errors import LeFusionError
from .conditioning import condition_record, conditioned_batch
from .types import GenerateConfig, Generated, Job, Tick

# Per kind of checkpoint: what it is, how it is used, how one is made (for messages naming the right command).
_DESCRIBE = {"lefusion": "a LeFusion lesion model", "cond-diffusion": "a Cond-Diffusion model", "diffmask": "a mask model (DiffMask)"}
_USE = {
    "lefusion": "`lefusion generate --method lefusion`",
    "cond-diffusion": "`lefusion generate --method cond-diffusion`",
    "diffmask": "`lefusion masks sample` (it makes lesion masks, not lesions)",
}
_TRAIN = {"lefusion": "lefusion train", "cond-diffusion": "lefusion train --method cond-diffusion", "diffmask": "lefusion masks train"}


def require_kind(model: DiffusionModel, kind: str) -> None:
    """Raise LeFusionError unless `model` is a `kind` model, naming what it is and how to use it."""
    if model.kind != kind:
        raise LeFusionError(
            f"{model.source}: is {_DESCRIBE[model.kind]}, not {_DESCRIBE[kind]}; use it with {_USE[model.kind]}, "
            f"or train {_DESCRIBE[kind]} with `{_TRAIN[kind]}`"
        )


@dataclass
class DiffusionMethod:
    """What the two diffusion methods share: the checkpoint, its conventions, the sampler."""

    model: DiffusionModel
    config: GenerateConfig = field(default_factory=GenerateConfig)
    kind: ClassVar[str] = ""
    default_sampler: ClassVar[SamplerConfig] = DEFAULT  # DDNM, 25 evaluations; PUBLISHED is one flag away

    def __post_init__(self) -> None:
        require_kind(self.model, self.kind)
        self.device = resolve_device(self.config.device)
        self.model.to(self.device).eval()
        self.sampler = (self.config.sampler or self.default_sampler).canonical()
        cfg = self.model.config
        self.conventions = DataConventions.of_model(cfg)
        self.label_hint = f"the checkpoint has {cfg.denoiser.channels} lesion channel(s) for label(s) {cfg.lesion_labels}"

    @property
    def presets(self) -> tuple[tuple[float, ...], ...]:
        """The texture presets `--preset K` / `all` refer to (the checkpoint's)."""
        return self.model.config.hist_presets

    def variants(self, config: GenerateConfig) -> tuple[str, ...]:
        return tuple(str(s) for s in config.presets)

    def header(self) -> dict[str, Any]:
        model = self.model
        return {"model": {"source": str(model.source), "sha256": model.weights_sha256, "config": model.config.to_dict()}}

    def steps(self, n: int) -> int:
        # The bar counts sampler moves (a batch is one long loop), so it moves even for a single batch.
        return len(self.sampler.plan(self.model.schedule.num_timesteps))

    def sampler_record(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.to_dict(),
            "network_evaluations": self.sampler.network_evaluations(self.model.schedule.num_timesteps),
        }


@dataclass
class LeFusionGenerator(DiffusionMethod):
    """The default method: LeFusion's background-preserving sampler with histogram conditions."""

    method: ClassVar[str] = "lefusion"
    kind: ClassVar[str] = "lefusion"
    preserves_background: ClassVar[bool] = True

    def settings(self) -> dict[str, Any]:
        # no "method" key: manifests written before baselines existed have none, and still resume
        return {"checkpoint": str(self.model.source), "checkpoint_sha256": self.model.weights_sha256, "sampler": self.sampler.to_dict()}

    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]:
        b = conditioned_batch(self.model, jobs, rois, self.device)
        cfg = self.model.config
        result = inpaint_lesions(
            self.model.denoiser,
            self.model.schedule,
            b.image,
            b.label,
            cfg.lesion_labels,
            b.cond,
            b.generators,
            self.sampler,
            progress=lambda done, total: tick(),
            mask_input=cfg.mask_input,
        ).cpu()
        return [Generated(result[i], {**condition_record(c), **self.sampler_record()}) for i, c in enumerate(b.conditions)]


@dataclass
class CondDiffusionGenerator(DiffusionMethod):
    """The Cond-Diffusion baseline: regenerates the whole ROI, conditioned on masks + masked image."""

    method: ClassVar[str] = "cond-diffusion"
    kind: ClassVar[str] = "cond-diffusion"
    default_sampler: ClassVar[SamplerConfig] = Ancestral()  # the baseline as defined: plain DDPM
    preserves_background: ClassVar[bool] = False  # it regenerates the whole ROI

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "checkpoint": str(self.model.source),
            "checkpoint_sha256": self.model.weights_sha256,
            "sampler": self.sampler.to_dict(),
        }

    def header(self) -> dict[str, Any]:
        header = super().header()
        header["model"][EXTRA_KEY] = self.model.extra.get(EXTRA_KEY, {})
        return header

    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]:
        """rois[i].image, .label: (1, D, H, W) -> Generated.roi (1, D, H, W) in [-1, 1], the whole ROI generated."""
        b = conditioned_batch(self.model, jobs, rois, self.device)  # as LeFusionGenerator: per-job seeds
        result = sample_cond_diffusion(
            self.model.denoiser,
            self.model.schedule,
            b.image,
            b.label,
            self.model.config.lesion_labels,
            b.cond,
            b.generators,
            progress=lambda done, total: tick(),
            sampler=self.sampler,
        ).cpu()
        record = {"background": "generated", **self.sampler_record()}
        return [Generated(result[i], {**condition_record(c), **record}) for i, c in enumerate(b.conditions)]
