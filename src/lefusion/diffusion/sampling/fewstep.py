"""What the few-step samplers (DDIM, DDNM, DiffPIR) share: a grid of K of the T levels, a plan over
it with optional RePaint-style resampling, and the generalised DDIM move between two levels.

Levels are step indices 0 .. T-1 (`schedule.py`), -1 the clean sample (abar = 1). A move down from
level t to a lower level s is one network evaluation; the samplers differ only in how much fresh
noise the move adds (`variance`) and in how the known region enters (`known_rule`, base.py).

The move (Song et al. 2021, eq. 12, for the subsequence tau of sec. 4.2):

    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z,   z ~ N(0, I),

with x0 the network's estimate clipped to the data range [-1, 1] and eps the noise that this x0
implies in x_t (eq. 4 inverted: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)). Deriving eps from
the clipped x0 (rather than taking the network's) keeps x0 and eps consistent, so with sigma^2 the
posterior variance and s = t - 1 the move is exactly the ancestral DDPM step (Ho et al. 2020,
eq. 6-7); DDNM's and DiffPIR's projected x0 enter the same way.

Tensors are (B, C, D, H, W); t is (B,) int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..schedule import NoiseSchedule, cosine_betas, schedule_tables
from .base import Estimate, Move, SamplerConfig
from .time_travel import jump_schedule


def step_grid(timesteps: int, steps: int) -> list[int]:
    """The K = min(steps, T) levels a few-step sampler visits, ascending (K >= 1).

    Level g = round((g + 1) T / K) - 1 for g = 0 .. K-1: the noisiest is T - 1, where x_T ~ N(0, I)
    is the right start, and the gaps are as even as integers allow (the "trailing" spacing of Lin
    et al. 2024, which starts at T - 1); K = T gives every level. Raises ValueError for steps < 1.
    """
    if timesteps < 1 or steps < 1:
        raise ValueError(f"timesteps and steps must be >= 1, got {timesteps}, {steps}")
    k = min(steps, timesteps)
    return [((g + 1) * timesteps * 2 + k) // (2 * k) - 1 for g in range(k)]  # round half up, in integers


def grid_plan(timesteps: int, steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> list[Move]:
    """The moves over the grid: down one grid level at a time from T-1 to -1, and with
    jump_n_sample > 1 back up `jump_length` grid levels and down again, jump_n_sample - 1 times at
    every jump_length-th grid level (RePaint's resampling, Lugmayr et al. 2022, sec. 4.2, on the
    grid instead of on all T levels). Network evaluations: the moves down."""
    grid = step_grid(timesteps, steps)
    visited = [grid[g] if g >= 0 else -1 for g in jump_schedule(len(grid), jump_length, jump_n_sample)]
    return list(zip(visited[:-1], visited[1:]))


class Levels(NamedTuple):
    """abar and 1 - abar at the levels t and s of one move, float64, (B, 1, ..., 1) each."""

    abar_t: torch.Tensor
    rest_t: torch.Tensor
    abar_s: torch.Tensor
    rest_s: torch.Tensor


def abar64(schedule: NoiseSchedule) -> torch.Tensor:
    """(T,) float64 abar of the schedule, from its definition (the buffers are float32)."""
    cfg = schedule.config
    return schedule_tables(cosine_betas(cfg.timesteps, cfg.cosine_s, cfg.max_beta))["alphas_cumprod"]


def levels(schedule: NoiseSchedule, t: torch.Tensor, to: torch.Tensor | int, ndim: int) -> Levels:
    """The coefficients of a move from level t (B,) to level `to` (int or (B,); -1: the clean sample).

    In float64 from the schedule's definition: the move's noise direction sqrt(1 - abar_s - sigma^2)
    is a small difference of numbers near 1 at the first levels (with eta = 1, 1 - abar_s - sigma^2 =
    alpha_t (1 - abar_s)^2 / (1 - abar_t), and alpha_{T-1} = 1e-4 on the clipped cosine schedule),
    which float32 tables would leave with three correct digits.
    """
    shape = (-1, *((1,) * (ndim - 1)))
    table = torch.cat((abar64(schedule), torch.ones(1, dtype=torch.float64)))  # index -1: the clean sample
    to = torch.as_tensor(to).expand(t.shape)
    abar_t, abar_s = table[t.cpu()], table[to.cpu()]
    out = (abar_t, 1.0 - abar_t, abar_s, 1.0 - abar_s)
    return Levels(*(v.reshape(shape).to(t.device) for v in out))


def ddim_variance(lv: Levels, eta: float) -> torch.Tensor:
    """sigma^2 of DDIM (Song et al. 2021, eq. 16): eta^2 (1 - abar_s)/(1 - abar_t) (1 - abar_t/abar_s);
    eta = 1 is the DDPM posterior variance, eta = 0 a deterministic move."""
    return eta**2 * lv.rest_s / lv.rest_t * (lv.rest_t - lv.rest_s) / lv.abar_s


def ddim_move(x_t: torch.Tensor, x0: torch.Tensor, lv: Levels, variance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t (B, C, D, H, W) at level t -> x_s by eq. 12 (module docstring) given the estimate x0,
    sigma^2 = `variance` ((B, 1, ..., 1), float64) and standard normal `noise` like x_t."""
    x0 = x0.clamp(-1.0, 1.0)
    dtype = x_t.dtype
    eps = (x_t - lv.abar_t.sqrt().to(dtype) * x0) / lv.rest_t.sqrt().to(dtype)
    direction = (lv.rest_s - variance).clamp(min=0).sqrt()
    return lv.abar_s.sqrt().to(dtype) * x0 + direction.to(dtype) * eps + variance.sqrt().to(dtype) * noise


def renoise_between(schedule: NoiseSchedule, x: torch.Tensor, frm: int, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x at level `frm` -> level t (B,) > frm by the forward process:
    q(x_t | x_frm) = N(sqrt(abar_t / abar_frm) x, (1 - abar_t / abar_frm) I) (Ho et al. 2020, eq. 4
    between two levels); for frm = t - 1 this is RePaint's one-step jump back."""
    lv = levels(schedule, t, frm, x.ndim)
    keep = lv.abar_t / lv.abar_s
    added = (lv.rest_t - lv.rest_s) / lv.abar_s  # = 1 - abar_t / abar_frm, without cancellation
    return keep.sqrt().to(x.dtype) * x + added.sqrt().to(x.dtype) * noise


@dataclass(frozen=True)
class FewStep(SamplerConfig):
    """Base of the few-step samplers: K = `steps` levels of the T (capped at T), resampling on that
    grid with jump_length / jump_n_sample counted in grid levels (1 / 1: none). Network
    evaluations: K without resampling; each jump adds jump_length (jump_n_sample - 1)."""

    steps: int = 25
    jump_length: int = 1
    jump_n_sample: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.jump_length < 1 or self.jump_n_sample < 1:
            raise ValueError(
                f"steps, jump_length and jump_n_sample must be >= 1, got {self.steps}, {self.jump_length}, {self.jump_n_sample}"
            )

    def plan(self, timesteps: int) -> list[Move]:
        return grid_plan(timesteps, self.steps, self.jump_length, self.jump_n_sample)

    def variance(self, lv: Levels) -> torch.Tensor:
        """sigma^2 of the move, (B, 1, ..., 1) float64."""
        raise NotImplementedError

    def down(
        self, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, to: int, estimate: Estimate, noise: torch.Tensor
    ) -> torch.Tensor:
        lv = levels(schedule, t, to, x_t.ndim)
        return ddim_move(x_t, estimate.x0, lv, self.variance(lv), noise)

    def up(self, schedule: NoiseSchedule, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, frm: int) -> torch.Tensor:
        return renoise_between(schedule, x, frm, t, noise)
