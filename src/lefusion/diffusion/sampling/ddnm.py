"""DDNM (Wang et al. 2023): the known region projected into every estimate of x0, K levels.

For inpainting the degradation A keeps the known voxels, so A^+ = A^T and the range-null-space
decomposition (eq. 13) x0 = A^+ y + (I - A^+ A) x0_hat is: the known voxels take their values, the
generated ones keep the network's estimate (`known_rule` "project", base.py). The move to the next
level is Alg. 1's reverse step with this x0, in DDIM's form (eq. 12 of Song et al. 2021 with eta;
DDNM's own accelerated sampler), so the known voxels of x_s carry on the noise they had in x_t
instead of fresh noise: known and generated voxels stay on one noise trajectory. Nothing the
network predicts outside the lesion is used (a lesion-focused model was never trained there):
eps is the one the projected x0 implies in x_t (`fewstep.py`). jump_length / jump_n_sample > 1 are
DDNM+'s time travel (sec. 3.3) on the K-level grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import KnownRule
from .ddim import DDIM


@dataclass(frozen=True)
class DDNM(DDIM):
    """steps K (capped at T), eta in [0, 1] (eq. 16's; 1 = the DDPM posterior of Alg. 1), resampling on the grid.

    DDIM's move and checks; only the known region's rule (projection into x0) and eta's default differ."""

    kind: ClassVar[str] = "ddnm"
    known_rule: ClassVar[KnownRule] = "project"
    eta: float = 1.0
