"""Training losses on the noise prediction.

The lesion-focused loss (LeFusion, sec. 3.1) scores the prediction only inside the lesion, so the
model spends no capacity on background it never has to generate. With several lesion classes,
class i lives in channel i and is scored only inside its own mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..config import Prediction
from .channels import with_context
from .process import q_sample, velocity
from .schedule import NoiseSchedule

LossKind = Literal["l1", "l2"]


def _error(pred: torch.Tensor, target: torch.Tensor, kind: LossKind) -> torch.Tensor:
    if kind == "l1":
        return (pred - target).abs()
    if kind == "l2":
        return (pred - target) ** 2
    raise ValueError(f"unknown loss kind {kind!r}; use 'l1' or 'l2'")


def lesion_focused_loss(pred: torch.Tensor, noise: torch.Tensor, masks: torch.Tensor, kind: LossKind = "l1") -> torch.Tensor:
    """Sum over classes of the mean masked error: sum_c mean_{b,z,y,x} m_c * err(pred_c, noise_c).

    pred, noise: (B, K, D, H, W); masks: (B, K, D, H, W) in {0, 1}. The mean runs over all voxels
    (not only the lesion's), as in the public release, so loss scale follows lesion size.
    """
    if masks.shape != pred.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must match the prediction {tuple(pred.shape)}")
    err = _error(pred * masks, noise * masks, kind)
    return err.mean(dim=(0, 2, 3, 4)).sum()


def global_loss(pred: torch.Tensor, target: torch.Tensor, kind: LossKind = "l1") -> torch.Tensor:
    """Ordinary diffusion loss over the whole volume (the RePaint baseline's training objective)."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown loss kind {kind!r}; use 'l1' or 'l2'")


def diffusion_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    masks: torch.Tensor | None,
    kind: LossKind = "l1",
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise x0 to step t, predict the noise, score it (lesion-focused if masks are given, else global).

    x0, noise: (B, K, D, H, W) in [-1, 1] units; t: (B,); cond: (B, cond_dim) or None; masks:
    (B, K, D, H, W) per-class lesion masks or None; context: (B, E, D, H, W) extra input channels
    appended to x_t (`mask_input.mask_channels` for a mask-input model) or None.
    """
    pred = denoiser(with_context(q_sample(schedule, x0, t, noise), context), t, cond)
    if masks is None:
        return global_loss(pred, noise, kind)
    return lesion_focused_loss(pred, noise, masks, kind)


def prediction_target(
    prediction: Prediction, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """What a network of this parameterisation is trained to output for x_t = q_sample(x0, t, noise):
    the noise, the clean sample, or v (Salimans & Ho 2022, sec. 4)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return velocity(schedule, x0, t, noise)
    raise ValueError(f"unknown prediction {prediction!r}; use 'eps', 'x0' or 'v'")
