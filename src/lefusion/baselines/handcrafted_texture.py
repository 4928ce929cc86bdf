"""Hand-Crafted texture baseline (in the style of Hu et al., CVPR 2023, label-free tumour synthesis).

Inside each lesion class: white Gaussian noise, smoothed with a Gaussian kernel of `sigma` voxels
(the texture's grain), standardised over the mask voxels to mean 0 and std 1, then scaled to the
target mean and std and clipped to [-1, 1]:

    v = clip(mean + std * (g - mean_mask(g)) / std_mask(g), -1, 1),   g = G_sigma * n,  n ~ N(0, I)

The target (mean, std) is given in [-1, 1] units, directly or as the moments of a lesion histogram
(`histogram_moments`), so the same texture presets that steer LeFusion can steer this baseline.
Only mask voxels change: the background is returned bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from .types import BaselineOutput


def histogram_moments(hist: Sequence[float]) -> tuple[float, float] | None:
    """(mean, std) in [-1, 1] units of a lesion histogram over equal bins spanning [-1, 1].

    hist: (bins,) non-negative weights (normalised here). Each bin's mass is spread uniformly over
    the bin, so var = sum_i p_i (c_i - mean)^2 + w^2 / 12 with bin centres c_i and width w = 2 / bins.
    Returns None for an all-zero histogram (a lesion class the histogram does not describe).
    """
    p = np.asarray(hist, dtype=np.float64)
    if p.sum() <= 0:
        return None
    p = p / p.sum()
    bins = len(p)
    width = 2.0 / bins
    centres = -1.0 + width * (np.arange(bins) + 0.5)
    mean = float((p * centres).sum())
    var = float((p * (centres - mean) ** 2).sum()) + width**2 / 12.0
    return mean, float(np.sqrt(var))


def smoothed_noise(shape: tuple[int, ...], sigma: float, generator: torch.Generator) -> np.ndarray:
    """Gaussian white noise (float64, shape `shape`) drawn with `generator`, smoothed by G_sigma (voxels)."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float64).numpy()
    # mode="reflect" keeps the texture statistics the same at the ROI border as in its middle
    return ndimage.gaussian_filter(noise, sigma=sigma, mode="reflect") if sigma > 0 else noise


def handcrafted_texture(
    image: np.ndarray,
    label: np.ndarray,
    lesion_labels: tuple[int, ...],
    generator: torch.Generator,
    *,
    means: Sequence[float],
    stds: Sequence[float],
    sigma: float = 1.0,
) -> BaselineOutput:
    """Fill lesion class i of `label` with smoothed noise of mean `means[i]` and std `stds[i]`.

    image: (D, H, W) float in [-1, 1]; label: (D, H, W) integer label ids; means, stds: one per
    lesion class, in [-1, 1] units; sigma: smoothing in voxels (0 = white noise). One noise field
    is drawn per class whether or not the class is present, so a class's texture does not depend
    on which other classes the mask holds. Returns the image (same dtype) and the targets used.
    """
    if len(means) != len(lesion_labels) or len(stds) != len(lesion_labels):
        raise ValueError(f"need one mean and std per lesion class {lesion_labels}, got {len(means)} and {len(stds)}")
    out = image.copy()
    for lesion_id, mean, std in zip(lesion_labels, means, stds):
        field = smoothed_noise(image.shape, sigma, generator)
        inside = label == lesion_id
        if not inside.any():
            continue
        g = field[inside]
        spread = g.std()
        # one voxel (or a constant field) has no spread: it gets the mean
        z = (g - g.mean()) / spread if spread > 0 else np.zeros_like(g)
        out[inside] = np.clip(mean + std * z, -1.0, 1.0).astype(out.dtype)
    record = {
        "texture_mean": [round(float(m), 6) for m in means],
        "texture_std": [round(float(s), 6) for s in stds],
        "smoothing_voxels": sigma,
    }
    return BaselineOutput(out, record)
