"""Histogram conditions per output, shared by the diffusion methods (LeFusion, Cond-Diffusion)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..control.conditions import Condition, choose_condition
from ..data.roi import Roi
from ..diffusion.model import DiffusionModel
from .types import Job


def condition_record(condition: Condition) -> dict[str, Any]:
    """Manifest fields of a histogram condition: spec, 1-based preset (None for a file), histogram."""
    return {"condition": condition.spec, "preset": condition.preset, "histogram": [round(v, 6) for v in condition.values]}


@dataclass(frozen=True, eq=False)
class ConditionedBatch:
    """A batch ready for a histogram-conditioned sampler: per job its condition and its sampling
    generator; image, label (B, 1, D, H, W) and cond (B, 16*C) or None, on the sampling device."""

    conditions: list[Condition]
    generators: list[torch.Generator]
    image: torch.Tensor
    label: torch.Tensor
    cond: torch.Tensor | None


def conditioned_batch(model: DiffusionModel, jobs: Sequence[Job], rois: Sequence[Roi], device: torch.device) -> ConditionedBatch:
    """Each job's condition (a jittered preset or mix) comes from a CPU generator seeded by the job,
    its sampling noise from another on `device` with the same seed: outputs do not depend on batching."""
    cfg = model.config
    conditions = [
        choose_condition(
            job.spec, cfg.hist_presets, cfg.denoiser.cond_dim or 0, cfg.preprocess.hist_bins, torch.Generator().manual_seed(job.seed)
        )
        for job in jobs
    ]
    generators = [torch.Generator(device=device).manual_seed(job.seed) for job in jobs]
    image = torch.stack([r.image for r in rois]).to(device)
    label = torch.stack([r.label for r in rois]).to(device)
    cond = torch.tensor([c.values for c in conditions], device=device) if cfg.denoiser.cond_dim else None
    return ConditionedBatch(conditions, generators, image, label, cond)
