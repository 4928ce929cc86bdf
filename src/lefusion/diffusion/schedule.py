"""Noise schedule of the Gaussian diffusion: pure float64 functions and a module of buffers.

Notation (Ho et al. 2020): beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s, for the
0-based step index t = 0 .. T-1 used everywhere in this package.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ScheduleConfig


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.9999) -> torch.Tensor:
    """(T,) float64 betas of the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    abar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2), beta_t = 1 - abar_t/abar_{t-1},
    clipped to [0, max_beta] so the last step is not singular.
    """
    steps = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((steps / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    abar = f / f[0]
    return torch.clip(1 - abar[1:] / abar[:-1], 0, max_beta)


def schedule_tables(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every per-step coefficient the process needs, from float64 betas (T,) -> dict of (T,) float64.

    posterior_* are the coefficients of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7); the log
    variance is clipped away from log(0) at t = 0.
    """
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, dim=0)
    abar_prev = torch.cat((abar.new_ones(1), abar[:-1]))
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
    }


class NoiseSchedule(nn.Module):
    """The schedule's tables as float32 buffers (computed in float64), so they follow `.to(device)`.

    Buffers carry the names of `schedule_tables`; `coef(name, t, ndim)` gathers one per sample.
    """

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ScheduleConfig()
        betas = cosine_betas(config.timesteps, config.cosine_s, config.max_beta)
        for name, table in schedule_tables(betas).items():
            self.register_buffer(name, table.to(torch.float32), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.config.timesteps

    def coef(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Table `name` at steps t (B,) -> (B, 1, ..., 1) with `ndim` dims, to broadcast over a batch."""
        values = getattr(self, name)[t]
        return values.reshape(-1, *((1,) * (ndim - 1)))
