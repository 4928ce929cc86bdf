"""The network's channels: the extra input channels appended to x_t (the lesion masks of a
mask-input model, `ModelConfig.mask_input`; the one way every model here appends channels, so
Cond-Diffusion and DiffMask use it too), and the class channels of a multi-class output.

A LeFusion network as published sees only x_t: the lesion region is implicit in it. At high noise
x_t carries no trace of where the lesion is, so the network predicts the same texture everywhere,
and anything that must sit at a definite place inside the lesion (a part-solid nodule's solid
core, near its centre) is never drawn: on the lung phantom, every preset-2 lesion came out as
ground glass (docs/benchmarks.md). Feeding the masks fixes the lesion's position at every step;
the loss, the sampler and the background handling stay as they are.

Layout: network input (B, K + K, D, H, W) = x_t (K class channels), then class i's mask as
-1 (outside) / +1 (inside) in channel K + i — the data's [-1, 1] range, as Cond-Diffusion and
DiffMask feed their masks.
"""

from __future__ import annotations

import torch


def mask_channels(masks: torch.Tensor) -> torch.Tensor:
    """(B, K, D, H, W) class masks in {0, 1} -> (B, K, D, H, W) in {-1, +1}."""
    return masks * 2 - 1


def with_context(x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """The network input: x (B, C, D, H, W), then the context channels (B, E, D, H, W) if any."""
    return x if context is None else torch.cat((x, context.to(x.dtype)), dim=1)


def combine_class_channels(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Multi-class output (B, K, D, H, W) -> one image (B, 1, D, H, W).

    Class i's voxels come from channel i; every other voxel from channel 0. Overlapping masks:
    the last class wins.
    """
    out = x[:, :1]
    for i in range(1, x.shape[1]):
        out = torch.where(masks[:, i : i + 1] > 0, x[:, i : i + 1], out)
    return out
