"""RePaint-style time travel (Lugmayr et al. 2022, sec. 4.2, Alg. 1): the release's
jump_length / jump_n_sample resampling schedule.

Sampling walks the step index down from T-1 to -1. Every `jump_length` steps (at indices that are
multiples of jump_length below T - jump_length) it walks back up `jump_length` steps, and does so
`jump_n_sample - 1` times per such index, so that known and generated regions can harmonise.
A move down is one ancestral step (one network evaluation); a move up is one re-noising step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..process import renoise
from ..schedule import NoiseSchedule
from .ancestral import Ancestral, ancestral_step
from .base import Estimate, Move, SamplerConfig


def jump_schedule(timesteps: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """The visited step indices, starting at T-1 and ending at -1 (consecutive entries differ by 1)."""
    if timesteps < 1 or jump_length < 1 or jump_n_sample < 1:
        raise ValueError("timesteps, jump_length and jump_n_sample must be positive")
    jumps_left = {t: jump_n_sample - 1 for t in range(0, timesteps - jump_length, jump_length)}
    t = timesteps
    visited: list[int] = []
    while t >= 1:
        t -= 1
        visited.append(t)
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            for _ in range(jump_length):
                t += 1
                visited.append(t)
    visited.append(-1)
    return visited


def count_network_evaluations(schedule: list[int]) -> int:
    """Number of denoising steps (moves to a smaller index) in a jump schedule."""
    return sum(1 for a, b in zip(schedule[:-1], schedule[1:]) if b < a)


@dataclass(frozen=True)
class TimeTravel(SamplerConfig):
    """Published LeFusion settings: jump length 10, 10 samples per jump (2,910 evaluations at T = 300).
    With jump_n_sample 1 it never jumps and is plain ancestral sampling."""

    kind: ClassVar[str] = "time-travel"
    jump_length: int = 10
    jump_n_sample: int = 10

    def __post_init__(self) -> None:
        if self.jump_length < 1 or self.jump_n_sample < 1:
            raise ValueError(f"jump_length and jump_n_sample must be >= 1, got {self.jump_length}, {self.jump_n_sample}")

    def plan(self, timesteps: int) -> list[Move]:
        visited = jump_schedule(timesteps, self.jump_length, self.jump_n_sample)
        return list(zip(visited[:-1], visited[1:]))

    def down(
        self, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, to: int, estimate: Estimate, noise: torch.Tensor
    ) -> torch.Tensor:
        return ancestral_step(schedule, x_t, t, to, estimate, noise)

    def up(self, schedule: NoiseSchedule, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, frm: int) -> torch.Tensor:
        return renoise(schedule, x, t, noise)  # frm is t - 1 in this plan

    def canonical(self) -> SamplerConfig:
        return Ancestral() if self.jump_n_sample == 1 else self
