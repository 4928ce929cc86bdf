"""Gaussian diffusion process as pure functions of a NoiseSchedule (Ho et al. 2020).

All volumes are (B, C, D, H, W); t is (B,) int64 step indices.
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward noising x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4)."""
    return schedule.coef("sqrt_alphas_cumprod", t, x0.ndim) * x0 + schedule.coef("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Invert eq. 4 for x0 given predicted noise: x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps."""
    return schedule.coef("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t - schedule.coef("sqrt_recipm1_alphas_cumprod", t, x_t.ndim) * eps


def predict_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Invert eq. 4 for the noise given an estimate of x0: eps = (sqrt(1/abar_t) x_t - x0) / sqrt(1/abar_t - 1)."""
    return (schedule.coef("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t - x0) / schedule.coef("sqrt_recipm1_alphas_cumprod", t, x_t.ndim)


def velocity(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The v target of Salimans & Ho 2022 (sec. 4): v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0."""
    return schedule.coef("sqrt_alphas_cumprod", t, x0.ndim) * noise - schedule.coef("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * x0


def predict_x0_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x0 from a v prediction: x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (exact given eq. 4)."""
    return schedule.coef("sqrt_alphas_cumprod", t, x_t.ndim) * x_t - schedule.coef("sqrt_one_minus_alphas_cumprod", t, x_t.ndim) * v


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and clipped log-variance of q(x_{t-1} | x_t, x0) (Ho et al. 2020, eq. 6-7)."""
    mean = schedule.coef("posterior_mean_coef1", t, x_t.ndim) * x0 + schedule.coef("posterior_mean_coef2", t, x_t.ndim) * x_t
    return mean, schedule.coef("posterior_log_variance_clipped", t, x_t.ndim)


def p_sample_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} given an estimate of x0 (Ho et al. 2020, eq. 6-7).

    x0 is clipped to the data range [-1, 1] and plugged into the posterior; no noise is added at
    t = 0.
    """
    mean, log_var = q_posterior(schedule, x0.clamp(-1.0, 1.0), x_t, t)
    not_last = (t != 0).to(x_t.dtype).reshape(-1, *((1,) * (x_t.ndim - 1)))
    return mean + not_last * (0.5 * log_var).exp() * noise


def p_sample_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} given the network's noise prediction (x0 from eq. 4)."""
    return p_sample_from_x0(schedule, x_t, t, predict_x0(schedule, x_t, t, eps), noise)


def p_sample_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} given the network's v prediction."""
    return p_sample_from_x0(schedule, x_t, t, predict_x0_from_v(schedule, x_t, t, v), noise)


def renoise(schedule: NoiseSchedule, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One forward step x_{t-1} -> x_t: sqrt(1 - beta_t) x + sqrt(beta_t) eps (RePaint's 'jump back')."""
    beta = schedule.coef("betas", t, x.ndim)
    return (1 - beta).sqrt() * x + beta.sqrt() * noise
