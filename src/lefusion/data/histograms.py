"""Lesion intensity histograms: the texture-control condition of LeFusion (sec. 3.2).

A class histogram counts that class's lesion voxels in `bins` equal bins over [-1, 1] (exactly
torch.histc(min=-1, max=1): bin = floor((v + 1) / 2 * bins), v = 1 in the last bin) and divides by
the class's voxel count, so it sums to 1 for a class present in the ROI. Class histograms are
concatenated in `lesion_labels` order; an absent class contributes zeros (as the release does for
EMIDEC PMO).
"""

from __future__ import annotations

import torch


def lesion_histogram(image: torch.Tensor, label: torch.Tensor, lesion_labels: tuple[int, ...], bins: int = 16) -> torch.Tensor:
    """Concatenated per-class lesion histograms.

    image: (1, D, H, W) or (D, H, W) in [-1, 1]; label: same shape, integer label ids.
    Returns (len(lesion_labels) * bins,) float32.
    """
    if image.shape != label.shape:
        raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} must have the same shape")
    values = image.detach().to(torch.float32)
    parts = []
    for lesion_id in lesion_labels:
        inside = label == lesion_id
        count = int(inside.sum())
        if count == 0:
            parts.append(torch.zeros(bins, dtype=torch.float32, device=values.device))
            continue
        counts = torch.histc(values[inside], bins=bins, min=-1.0, max=1.0)
        parts.append(counts / count)
    return torch.cat(parts)


def wasserstein_1d_hist(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Earth mover's (W1) distance between histograms over the same equal bins spanning [-1, 1].

    p, q: (..., bins), non-negative; each is normalised to sum 1 over the last axis first, so raw
    counts work too. W1 = sum_i |CDF_p(i) - CDF_q(i)| * bin_width, returned in [-1, 1] intensity
    units (bin_width = 2 / bins): 0 for identical histograms, 2 at most (all mass at opposite ends,
    approached as bins grow). Shape (...,), float32 (computed in float64). For concatenated class histograms reshape to (K, bins).
    """
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    if (p < 0).any() or (q < 0).any():
        raise ValueError("histograms must be non-negative")
    p_sum, q_sum = p.sum(-1, keepdim=True), q.sum(-1, keepdim=True)
    if (p_sum == 0).any() or (q_sum == 0).any():
        raise ValueError("a histogram is all zeros (absent lesion class?); W1 is undefined for it")
    cdf_gap = torch.cumsum(p / p_sum - q / q_sum, dim=-1)
    bins = p.shape[-1]
    return (cdf_gap.abs().sum(-1) * (2.0 / bins)).to(torch.float32)
