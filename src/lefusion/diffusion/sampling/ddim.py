"""DDIM (Song et al. 2021): K of the T levels, the known region re-noised to each level.

The move from level t to the next grid level s is eq. 12 with sigma from eq. 16 (`fewstep.py`):
eta = 0 is deterministic given x_T and the known region's noise, eta = 1 adds the DDPM posterior's
noise (and with K = T it is ancestral sampling). The known region enters as in the release's
sampler: before every evaluation it is put back at level t with fresh noise (RePaint, eq. 8), so
the network's input is in distribution at every level. jump_length / jump_n_sample > 1 add
RePaint's resampling on the K-level grid ("RePaint in fewer steps").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .fewstep import FewStep, Levels, ddim_variance


@dataclass(frozen=True)
class DDIM(FewStep):
    """steps K (capped at T), eta in [0, 1], resampling on the grid (1 / 1: none)."""

    kind: ClassVar[str] = "ddim"
    eta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def variance(self, lv: Levels) -> torch.Tensor:
        return ddim_variance(lv, self.eta)
