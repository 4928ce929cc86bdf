"""Background-preserving inpainting sampler (LeFusion sec. 3.2; RePaint, Lugmayr et al. 2022, Alg. 1).

At every reverse step the voxels outside the lesion are replaced by the real image, forward-diffused
to the current noise level (eq. 8 of RePaint: x_known ~ q(x_t | x_0)), so the network sees the true
context; inside the lesion it denoises freely. Time travel (re-noising and repeating steps) lets the
two regions harmonise. At the end the ORIGINAL background is pasted back bit-exactly; the public
release instead returned the network's reconstruction of the background.

Volumes are (B, K, D, H, W) with K lesion-class channels; label maps are (B, 1, D, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..models import Denoiser
from .losses import class_masks
from .mask_input import mask_channels, with_context
from .process import p_sample_from_eps, q_sample, renoise
from .schedule import NoiseSchedule
from .time_travel import jump_schedule

ProgressFn = Callable[[int, int], None]


def background_preserving_step(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    known: torch.Tensor,
    lesion: torch.Tensor,
    noise_known: torch.Tensor,
    noise_step: torch.Tensor,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """One reverse step x_t -> x_{t-1} with the background taken from the real image.

    x_t, known, noise_known, noise_step: (B, K, D, H, W); t: (B,); lesion: bool, broadcastable to
    x_t, True where the lesion is generated; context: (B, E, D, H, W) extra network input channels
    or None. The known image is diffused with abar at t (not t-1), as in the public release, so
    the network input is consistent at level t.
    """
    x_in = torch.where(lesion, x_t, q_sample(schedule, known, t, noise_known))
    eps = denoiser(with_context(x_in, context), t, cond)
    return p_sample_from_eps(schedule, x_in, t, eps, noise_step)


def combine_class_channels(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Multi-class output (B, K, D, H, W) -> one image (B, 1, D, H, W).

    Class i's voxels come from channel i; every other voxel from channel 0 (background is
    replaced by the original afterwards anyway). Overlapping masks: the last class wins.
    """
    out = x[:, :1]
    for i in range(1, x.shape[1]):
        out = torch.where(masks[:, i : i + 1] > 0, x[:, i : i + 1], out)
    return out


Generators = torch.Generator | Sequence[torch.Generator]


def _randn(shape: torch.Size, generator: Generators, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise; with one generator per sample, sample i's noise depends only on
    generator i, so an output does not depend on which other cases share its batch."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return torch.stack([torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator])


@torch.no_grad()
def inpaint_lesions(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    image: torch.Tensor,
    label: torch.Tensor,
    lesion_labels: tuple[int, ...],
    cond: torch.Tensor | None,
    generator: Generators,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    progress: ProgressFn | None = None,
    mask_input: bool = False,
) -> torch.Tensor:
    """Generate lesions inside `label`'s lesion classes, keep everything else bit-exactly.

    image: (B, 1, D, H, W) in [-1, 1]; label: (B, 1, D, H, W) integer label map; cond:
    (B, K*bins) histogram condition or None; generator: the only source of randomness, on the
    same device as `image`; one generator, or one per sample; mask_input: the network also takes
    the class masks as input channels (`ModelConfig.mask_input`). Returns (B, 1, D, H, W):
    generated inside the lesion, `image` elsewhere.
    """
    masks = class_masks(label, lesion_labels).to(image.dtype)
    context = mask_channels(masks) if mask_input else None
    lesion = masks.sum(dim=1, keepdim=True) > 0
    known = image.expand(-1, len(lesion_labels), -1, -1, -1)
    batch = image.shape[0]
    times = jump_schedule(schedule.num_timesteps, jump_length, jump_n_sample)
    x = _randn(known.shape, generator, image.dtype)
    for i, (t_now, t_next) in enumerate(zip(times[:-1], times[1:])):
        if t_next < t_now:
            t = torch.full((batch,), t_now, device=image.device, dtype=torch.long)
            noise_known = _randn(known.shape, generator, image.dtype)
            noise_step = _randn(known.shape, generator, image.dtype)
            x = background_preserving_step(denoiser, schedule, x, t, cond, known, lesion, noise_known, noise_step, context)
        else:
            t = torch.full((batch,), t_next, device=image.device, dtype=torch.long)
            x = renoise(schedule, x, t, _randn(known.shape, generator, image.dtype))
        if progress is not None:
            progress(i + 1, len(times) - 1)
    return torch.where(lesion, combine_class_channels(x, masks), image)
