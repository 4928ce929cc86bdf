"""Label maps to per-class masks: lesion class i (label id lesion_labels[i]) lives in channel i."""

from __future__ import annotations

import torch


def class_masks(label_map: torch.Tensor, lesion_labels: tuple[int, ...]) -> torch.Tensor:
    """Label map (B, 1, D, H, W) -> float masks (B, K, D, H, W), channel i = (label == lesion_labels[i])."""
    ids = torch.as_tensor(lesion_labels, device=label_map.device, dtype=label_map.dtype)
    return (label_map == ids.view(1, -1, 1, 1, 1)).to(torch.float32)
