"""LeFusion's background-preserving lesion inpainting on ROIs (LeFusion sec. 3.2).

The known region is the real image outside the lesion: before every reverse step it is put back at
the current noise level (RePaint eq. 8, abar at t, as in the public release), so the network sees
the true context while it denoises the lesion freely; a time-travel sampler lets the two regions
harmonise. At the end the ORIGINAL background is pasted back bit-exactly; the public release
instead returned the network's reconstruction of the background.

Volumes are (B, K, D, H, W) with K lesion-class channels; label maps are (B, 1, D, H, W).
"""

from __future__ import annotations

import torch

from ..data.labels import class_masks
from .channels import combine_class_channels, mask_channels
from .sampling import DEFAULT, KnownRegion, Network, Noise, SamplerConfig
from .sampling.base import Generators, ProgressFn
from .schedule import NoiseSchedule


def lesion_known_region(image: torch.Tensor, masks: torch.Tensor) -> KnownRegion:
    """image (B, 1, D, H, W) in [-1, 1], class masks (B, K, D, H, W) {0, 1} -> the known region:
    the image in every class channel, generated wherever any class's mask is."""
    lesion = masks.sum(dim=1, keepdim=True) > 0
    return KnownRegion(image.expand(-1, masks.shape[1], -1, -1, -1), lesion)


@torch.no_grad()
def inpaint_lesions(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    image: torch.Tensor,
    label: torch.Tensor,
    lesion_labels: tuple[int, ...],
    cond: torch.Tensor | None,
    generator: Generators,
    sampler: SamplerConfig = DEFAULT,
    progress: ProgressFn | None = None,
    mask_input: bool = False,
) -> torch.Tensor:
    """Generate lesions inside `label`'s lesion classes, keep everything else bit-exactly.

    image: (B, 1, D, H, W) in [-1, 1]; label: (B, 1, D, H, W) integer label map; cond:
    (B, K*bins) histogram condition or None; generator: the only source of randomness, on the
    same device as `image`; one generator, or one per sample; sampler: which reverse process
    (default DDNM with 25 steps; `PUBLISHED` is the release's time travel 10 x 10); mask_input: the network also takes the class
    masks as input channels (`ModelConfig.mask_input`). Returns (B, 1, D, H, W): generated inside
    the lesion, `image` elsewhere.
    """
    masks = class_masks(label, lesion_labels).to(image.dtype)
    known = lesion_known_region(image, masks)
    network = Network(denoiser, cond, mask_channels(masks) if mask_input else None)
    noise = Noise(generator, image.device, image.dtype)
    x = sampler.sample(network, schedule, known.values.shape, noise, known, progress)
    return combine_class_channels(x, masks)
