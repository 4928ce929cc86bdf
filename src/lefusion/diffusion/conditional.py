"""Cond-Diffusion: the conditional-DDPM baseline of the LeFusion paper — network input, loss, sampler.

A standard DDPM whose network sees, besides the noisy volume x_t, the lesion masks and the
*masked image* (the real image with every lesion voxel blanked) as extra input channels. It is
trained with the ordinary global noise-prediction loss over the whole ROI and, at sampling,
generates the whole ROI from noise by plain ancestral DDPM (Ho et al. 2020, Alg. 2). Unlike
LeFusion (`inpainting.py`) nothing forces the background: the real context enters only through the
conditioning channels, so how well the background is reproduced is up to the network — which is
exactly what the baseline measures.

Channel layout of the network input (B, K + K + 1, D, H, W), K = number of lesion classes:
    [0, K)      x_t, one channel per class (as for LeFusion, so the histogram condition and
                `combine_class_channels` work unchanged; every channel regenerates the whole ROI)
    [K, 2K)     class masks, channel K + i = lesion class i, as -1 (outside) / +1 (inside) — the
                [-1, 1] range of the data, as DiffMask feeds its control sphere
    2K          masked image: the ROI in [-1, 1] with the union of the lesion masks set to
                MASKED_FILL = 0

Why 0 for the blanked voxels: 0 is the centre of the data range and a zero input contributes
nothing to the first convolution, so the blanked region carries no intensity at all (-1 would
read as air, which lung parenchyma nearly is, and leak a fake "dark lesion" hint); the mask
channels tell the network where the blank is.

Volumes are (B, C, D, H, W); label maps (B, 1, D, H, W) integer ids; t (B,) int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.labels import class_masks
from .channels import combine_class_channels, mask_channels, with_context
from .losses import LossKind, global_loss
from .process import q_sample
from .sampling import Ancestral, Network, Noise, SamplerConfig
from .sampling.base import ProgressFn
from .schedule import NoiseSchedule

EXTRA_KEY = "cond_diffusion"  # checkpoint `extra` entry that describes a Cond-Diffusion model's inputs
MASKED_FILL = 0.0  # value of lesion voxels in the masked-image channel (see module docstring)


def checkpoint_record(n_classes: int) -> dict[str, Any]:
    """What a Cond-Diffusion checkpoint stores under extra[EXTRA_KEY]: its input layout, for a
    reader of the file (the model's kind is in its config)."""
    return {
        "inputs": f"x_t ({n_classes}) | class masks as -1/+1 ({n_classes}) | masked image (1)",
        "masked_fill": MASKED_FILL,
        "loss": "global",
        "sampler": "ancestral DDPM over all T steps, whole ROI",
    }


def network_context(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The conditioning channels: (B, 1, D, H, W) image in [-1, 1] and (B, K, D, H, W) {0, 1}
    class masks -> (B, K + 1, D, H, W) = (masks as -1/+1, image with lesion voxels = MASKED_FILL).

    Only voxels outside every mask pass image intensities on, so the network cannot see (and copy)
    the lesion it is asked to generate.
    """
    if image.shape[1] != 1 or masks.shape[0] != image.shape[0] or masks.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} must be (B, 1, D, H, W) and masks {tuple(masks.shape)} (B, K, D, H, W) on the same grid"
        )
    masks = masks.to(image.dtype)
    lesion = masks.sum(dim=1, keepdim=True) > 0
    return torch.cat((mask_channels(masks), image.masked_fill(lesion, MASKED_FILL)), dim=1)


def cond_diffusion_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    masks: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    kind: LossKind = "l1",
) -> torch.Tensor:
    """Noise the whole ROI to step t, predict the noise from (x_t, context), global loss everywhere.

    x0, noise: (B, K, D, H, W) in [-1, 1] (the image repeated over the K class channels, as the
    training dataset provides it); masks: (B, K, D, H, W) {0, 1}; t: (B,); cond: (B, K * bins) or None.
    """
    context = network_context(x0[:, :1], masks)
    pred = denoiser(with_context(q_sample(schedule, x0, t, noise), context), t, cond)
    return global_loss(pred, noise, kind)


@torch.no_grad()
def sample_cond_diffusion(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    image: torch.Tensor,
    label: torch.Tensor,
    lesion_labels: tuple[int, ...],
    cond: torch.Tensor | None,
    generators: Sequence[torch.Generator],
    progress: ProgressFn | None = None,
    sampler: SamplerConfig = Ancestral(),
) -> torch.Tensor:
    """Generate the whole ROI from noise, conditioned on the masks and the masked image.

    image: (B, 1, D, H, W) in [-1, 1]; label: (B, 1, D, H, W) label ids; cond: (B, K * bins) or
    None (the learned null condition); generators: one per sample, on the image's device — sample
    i's x_T and step noise come from generator i only, so it does not depend on its batch.
    progress(done, total) after each move of the sampler (default: ancestral DDPM, T network
    evaluations, the baseline as defined). Returns (B, 1, D, H, W) in [-1, 1]: class i's voxels
    from channel i, all others (the background too) from channel 0. There is no known region:
    nothing of `image` is pasted back, the background is the model's.
    """
    masks = class_masks(label, lesion_labels).to(image.dtype)
    network = Network(denoiser, cond, network_context(image, masks))
    shape = (image.shape[0], len(lesion_labels), *image.shape[2:])
    x = sampler.sample(network, schedule, shape, Noise(generators, image.device, image.dtype), None, progress)
    return combine_class_channels(x, masks)
