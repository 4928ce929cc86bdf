"""Cond-Diffusion as a `lefusion generate` method (`--method cond-diffusion`).

The model (`lefusion train --method cond-diffusion`) is a conditional DDPM whose network gets the
lesion masks and the masked image as extra input channels, trained with the global loss over the
whole ROI (network input, loss and sampler: `lefusion.diffusion.conditional`). Generation runs
plain ancestral DDPM over all T steps and returns what the model generated over the WHOLE ROI:
unlike LeFusion nothing is pasted back inside the ROI box, so how well the background survives is
part of what the baseline shows. The ROI goes back into the source volume through the same
`restore_roi` as every method; voxels outside the ROI box stay the source's, bit for bit.

Histogram condition: kept, exactly as LeFusion's (16 bins per lesion class, presets from k-means
over the training lesions, the same `choose_condition` per output). So `--preset 1 2 3 / mix /
all / FILE.json` produce the same variants, file names and per-output conditions for both
methods, and a comparison isolates what the baseline changes — how the model is conditioned on
the scan and what it generates — rather than also removing texture control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..data.roi import Roi
from ..diffusion.conditional import EXTRA_KEY, METHOD, is_cond_diffusion, sample_cond_diffusion
from ..errors import LeFusionError
from ..generation.pipeline import GenerateConfig, Generated, Job, Tick, condition_record, conditioned_batch, model_conventions
from ..model import LeFusionModel
from ..training.session import resolve_device


@dataclass
class CondDiffusionGenerator:
    """The Cond-Diffusion baseline behind the pipeline's RoiGenerator interface.

    model: a checkpoint from `lefusion train --method cond-diffusion` (anything else is refused);
    device: "auto" (CUDA when available), "cpu", "cuda", ... The sampler ignores GenerateConfig's
    jump settings: it is plain DDPM, T network evaluations per batch.
    """

    model: LeFusionModel
    device: str = "auto"
    method: ClassVar[str] = METHOD
    preserves_background: ClassVar[bool] = False  # it regenerates the whole ROI

    def __post_init__(self) -> None:
        cfg = self.model.config
        if not is_cond_diffusion(self.model.extra):
            kind = "a mask model (DiffMask)" if cfg.denoiser.extra_in_channels and not cfg.mask_input else "a LeFusion lesion model"
            raise LeFusionError(
                f"{self.model.source}: is {kind}, not a Cond-Diffusion model; train one with "
                f"`lefusion train --method {METHOD}`, or generate with this checkpoint's own method"
            )
        self.torch_device = resolve_device(self.device)
        self.model.to(self.torch_device).eval()
        self.conventions = model_conventions(self.model)
        self.label_hint = f"the checkpoint has {cfg.denoiser.channels} lesion channel(s) for label(s) {cfg.lesion_labels}"

    @property
    def presets(self) -> tuple[tuple[float, ...], ...]:
        """The texture presets `--preset K` / `all` refer to (the checkpoint's)."""
        return self.model.config.hist_presets

    def variants(self, config: GenerateConfig) -> tuple[str, ...]:
        return tuple(str(s) for s in config.presets)

    def settings(self) -> dict[str, Any]:
        return {"method": METHOD, "checkpoint": str(self.model.source), "checkpoint_sha256": self.model.weights_sha256}

    def header(self) -> dict[str, Any]:
        model = self.model
        return {"model": {"source": str(model.source), "sha256": model.weights_sha256, "config": model.config.to_dict(),
                          EXTRA_KEY: model.extra[EXTRA_KEY]}}

    def steps(self, n: int) -> int:
        # one unit per reverse step: a batch is one loop of T network evaluations
        return self.model.schedule.num_timesteps

    def __call__(self, jobs: Sequence[Job], rois: Sequence[Roi], tick: Tick) -> list[Generated]:
        """rois[i].image, .label: (1, D, H, W) -> Generated.roi (1, D, H, W) in [-1, 1], the whole ROI generated."""
        b = conditioned_batch(self.model, jobs, rois, self.torch_device)  # as LeFusionGenerator: per-job seeds
        result = sample_cond_diffusion(
            self.model.denoiser, self.model.schedule, b.image, b.label, self.model.config.lesion_labels, b.cond, b.generators,
            progress=lambda done, total: tick(),
        ).cpu()
        return [Generated(result[i], {**condition_record(c), "background": "generated"}) for i, c in enumerate(b.conditions)]
