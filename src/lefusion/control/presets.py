"""Histogram presets: the texture-control conditions a model ships with.

A preset is one condition vector: K lesion-class histograms of `bins` values, concatenated. The
public release stores presets as k-means centres, `[{"n_class": k, "centers": [[...], ...]}]`;
for a single-class model each centre is a preset (LIDC: 3, roughly ground-glass / part-solid /
solid), for a K-class model the K centres are one preset (EMIDEC: MI then PMO).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LeFusionError

if TYPE_CHECKING:
    import torch


def presets_from_centres(centres: list[list[float]], cond_dim: int) -> list[tuple[float, ...]]:
    """Turn k-means centres into presets of length cond_dim (see module docstring)."""
    if not centres:
        raise ValueError("no histogram centres")
    width = len(centres[0])
    if any(len(c) != width for c in centres):
        raise ValueError("histogram centres have different lengths")
    if width == cond_dim:
        return [tuple(float(v) for v in c) for c in centres]
    if width * len(centres) == cond_dim:
        return [tuple(float(v) for c in centres for v in c)]
    raise ValueError(f"{len(centres)} centres of {width} values cannot form presets of {cond_dim} values")


def read_presets(path: str | Path, cond_dim: int) -> list[tuple[float, ...]]:
    """Read presets from the public release's cluster JSON or from a plain list of vectors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LeFusionError(f"{path}: unreadable histogram preset file ({exc})") from exc
    if isinstance(data, list) and data and isinstance(data[0], dict) and "centers" in data[0]:
        centres = data[0]["centers"]
    elif isinstance(data, dict) and "hist_presets" in data:
        centres = data["hist_presets"]
    elif isinstance(data, list) and data and isinstance(data[0], list):
        centres = data
    else:
        raise LeFusionError(f"{path}: expected [{{'centers': [[...], ...]}}] or a list of histograms")
    try:
        return presets_from_centres(centres, cond_dim)
    except ValueError as exc:
        raise LeFusionError(f"{path}: {exc}") from exc


def fit_presets(hists: torch.Tensor, k: int, seed: int = 0, bins: int = 16) -> list[tuple[float, ...]]:
    """k-means (k-means++ init, seeded) over training lesion histograms (N, K*bins) -> k presets.

    Presets are ordered by the mean lesion intensity they describe (first class's histogram), so
    for lung nodules preset 1 is the faintest (ground-glass-like) and the last the densest (solid),
    matching the order of the published LIDC presets. Each class histogram is renormalised to 1.
    """
    import numpy as np
    from scipy.cluster.vq import kmeans2

    data = hists.detach().double().cpu().numpy()
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"need a (N, K*bins) array of histograms, got shape {tuple(hists.shape)}")
    k = max(1, min(k, data.shape[0]))
    centres, _ = kmeans2(data, k, minit="++", seed=np.random.default_rng(seed))
    centres = np.clip(centres, 0.0, None).reshape(k, -1, bins)
    sums = centres.sum(axis=-1, keepdims=True)
    centres = np.where(sums > 0, centres / np.where(sums > 0, sums, 1.0), 0.0)
    bin_centres = np.linspace(-1 + 1 / bins, 1 - 1 / bins, bins)
    order = np.argsort((centres[:, 0, :] * bin_centres).sum(axis=-1), kind="stable")
    return [tuple(float(v) for v in centres[i].reshape(-1)) for i in order]
