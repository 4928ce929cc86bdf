"""Ancestral DDPM sampling (Ho et al. 2020, Alg. 2): every step from T-1 down to 0, one network
evaluation each, T in all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..process import p_sample_from_x0
from ..schedule import NoiseSchedule
from .base import Estimate, Move, SamplerConfig


@dataclass(frozen=True)
class Ancestral(SamplerConfig):
    """x_{t-1} ~ q(x_{t-1} | x_t, x0_hat) with x0_hat clipped to [-1, 1] (eq. 6-7); no noise at t = 0."""

    kind: ClassVar[str] = "ancestral"

    def plan(self, timesteps: int) -> list[Move]:
        return [(t, t - 1) for t in reversed(range(timesteps))]

    def down(
        self, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, to: int, estimate: Estimate, noise: torch.Tensor
    ) -> torch.Tensor:
        return ancestral_step(schedule, x_t, t, to, estimate, noise)


def ancestral_step(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, to: int, estimate: Estimate, noise: torch.Tensor
) -> torch.Tensor:
    """The posterior step x_t -> x_{t-1} (`to` is t - 1 by the plans that use it)."""
    return p_sample_from_x0(schedule, x_t, t, estimate.x0, noise)
