"""Lesion-DDPM: a whole-volume conditional DDPM, its lesion-weighted loss and its sampler.

The network (`lefusion.models.volume_unet.VolumeUNet`) predicts the noise eps of
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4; cosine schedule, Nichol &
Dhariwal 2021, eq. 17) from x_t and the condition channels (anatomy + lesion). The whole volume is
generated: nothing of a real image is kept or seen.

Loss (per sample b, over its voxels v), the lesion-weighted L1 of the noise prediction:

    L_b = sum_v w_v |eps_theta(x_t, t, c)_v - eps_v| / sum_v w_v,   w_v = 1 + lambda * l_v,

l_v the lesion fraction of voxel v (1 inside a lesion, 0 outside, partial on the model grid's
boundary voxels). A lesion voxel thus weighs lambda + 1 times a background voxel, and every voxel
keeps weight >= 1 (the anatomy is learnt everywhere). Normalising by the sample's own weight sum
keeps the loss scale independent of lesion load; the batch loss is the mean of the L_b, a plain
batch mean, so data-parallel training stays exact (`lefusion.training.distributed`).

Why noise and not x0: the ancestral step (eq. 11) and every few-step sampler here take either,
but eps is what DDPM's derivation and the cosine schedule's tuning assume; L1 (the paper's choice,
and LeFusion's) is robust to the heavy tails of FLAIR's bright lesions. A model records
`prediction = "eps"`, and the samplers read it from there.

Tensors are (B, C, D, H, W); t (B,) int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .channels import with_context
from .process import q_sample
from .sampling import Ancestral, Network, Noise, SamplerConfig
from .sampling.base import ProgressFn
from .schedule import NoiseSchedule

EXTRA_KEY = "lesion_ddpm"  # checkpoint `extra` entry describing the inputs, for a reader of the file


def checkpoint_record(condition: Sequence[str]) -> dict[str, Any]:
    """What a Lesion-DDPM checkpoint stores under extra[EXTRA_KEY] (the kind is in its config)."""
    return {
        "inputs": "x_t (1) | " + " | ".join(f"{c} as -1/+1" for c in condition),
        "loss": "lesion-weighted L1 on eps: sum w |e| / sum w per sample, w = 1 + lesion_weight * lesion",
        "sampler": "any (default ancestral DDPM over all T steps), whole volume from noise",
    }


def lesion_weights(lesion: torch.Tensor, lesion_weight: float) -> torch.Tensor:
    """(B, 1, D, H, W) lesion fractions in [0, 1] -> voxel weights 1 + lambda * lesion."""
    return 1.0 + lesion_weight * lesion


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_v w |pred - target| / sum_v w (module docstring).

    pred, target: (B, C, D, H, W); weights: (B, 1 or C, D, H, W), >= 0 with a positive sum per sample.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    weights = weights.expand_as(pred)
    dims = tuple(range(1, pred.ndim))
    return ((pred - target).abs() * weights).sum(dims).div(weights.sum(dims)).mean()


def lesion_ddpm_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cond: torch.Tensor,
    lesion: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    lesion_weight: float,
) -> torch.Tensor:
    """Noise the whole volume to step t, predict the noise from (x_t, condition), weighted L1.

    x0, noise: (B, 1, D, H, W) in [-1, 1]; cond: (B, E, D, H, W) in [-1, 1]; lesion: (B, 1, D, H, W)
    in [0, 1]; t: (B,).
    """
    pred = denoiser(with_context(q_sample(schedule, x0, t, noise), cond), t, None)
    return weighted_l1(pred, noise, lesion_weights(lesion, lesion_weight))


@torch.no_grad()
def sample_volumes(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    cond: torch.Tensor,
    generators: Sequence[torch.Generator],
    sampler: SamplerConfig = Ancestral(),
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Whole volumes from noise given their condition.

    cond: (B, E, D, H, W) in [-1, 1]; generators: one per sample (sample i's x_T and step noise
    come from generator i only, so it does not depend on its batch). -> (B, 1, D, H, W) in [-1, 1].
    """
    network = Network(denoiser, None, cond)
    shape = (cond.shape[0], 1, *cond.shape[2:])
    x = sampler.sample(network, schedule, shape, Noise(generators, cond.device, cond.dtype), None, progress)
    return x.clamp(-1.0, 1.0)
