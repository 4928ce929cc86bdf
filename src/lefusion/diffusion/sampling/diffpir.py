"""DiffPIR (Zhu et al. 2023): a data step on every estimate of x0, then a move with a ζ-mix of
the estimate's own noise and fresh noise, K levels.

Alg. 1: x0_hat = argmin_z ||y - H z||^2 + rho_t ||z - x0||^2 (eq. 13), eps_hat = the noise x0_hat
implies in x_t, x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) (sqrt(1 - ζ) eps_hat + sqrt(ζ) z).
Our measurement is the known region itself, without noise (sigma_n = 0, so rho_t = lambda
sigma_n^2 / sigma_t^2 = 0): the data step's closed form for inpainting, (M y + rho_t x0) / (M +
rho_t), is the projection (`known_rule` "project", base.py), and lambda drops out. The move is
eq. 12 of DDIM with sigma^2 = ζ (1 - abar_s) (`fewstep.py`): ζ = 0 is deterministic, ζ = 1
re-noises the whole estimate with fresh noise at every level (the known voxels then sit at level s
with fresh noise, as in RePaint). jump_length / jump_n_sample > 1 resample on the K-level grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import KnownRule
from .fewstep import FewStep, Levels


@dataclass(frozen=True)
class DiffPIR(FewStep):
    """steps K (capped at T), zeta in [0, 1] (the share of fresh noise in each move), resampling on the grid."""

    kind: ClassVar[str] = "diffpir"
    known_rule: ClassVar[KnownRule] = "project"
    zeta: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {self.zeta}")

    def variance(self, lv: Levels) -> torch.Tensor:
        return self.zeta * lv.rest_s
