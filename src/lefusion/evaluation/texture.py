"""Does the histogram condition steer the lesion texture? Generated lesion histograms vs preset targets.

For every output of a generation run, the lesion histogram of the generated ROI (in the model's
[-1, 1] units) is compared with every preset by the 1-D Wasserstein distance over the 16 bins. If
texture control works, each preset's outputs are nearest to their own preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.histograms import lesion_histogram, wasserstein_1d_hist
from ..data.roi import prepare_roi
from ..diffusion.model import DiffusionModel
from ..io import read_volume


def generated_histograms(model: DiffusionModel, out_dir: Path) -> dict[str, list[torch.Tensor]]:
    """condition -> list of (K*bins,) lesion histograms of the generated outputs in `out_dir`."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    cfg = model.config
    result: dict[str, list[torch.Tensor]] = {}
    for entry in manifest["outputs"].values():
        image, label = read_volume(out_dir / entry["image"]), read_volume(out_dir / entry["label"])
        roi = prepare_roi(image, label, cfg.preprocess)
        hist = lesion_histogram(roi.image, roi.label, cfg.lesion_labels, cfg.preprocess.hist_bins)
        result.setdefault(str(entry["condition"]), []).append(hist)
    return result


def distance_matrix(model: DiffusionModel, histograms: dict[str, list[torch.Tensor]]) -> tuple[list[str], np.ndarray]:
    """(conditions, M) with M[i, j] = mean W1 between outputs of condition i and preset j+1 (first class)."""
    bins = model.config.preprocess.hist_bins
    presets = torch.tensor(model.config.hist_presets)[:, :bins]
    names = sorted(histograms)
    matrix = np.zeros((len(names), len(presets)))
    for i, name in enumerate(names):
        hists = torch.stack(histograms[name])[:, :bins]
        for j, target in enumerate(presets):
            matrix[i, j] = float(wasserstein_1d_hist(hists, target.expand_as(hists)).mean())
    return names, matrix


def mean_intensity(histograms: list[torch.Tensor], bins: int = 16) -> float:
    """Mean lesion intensity in [-1, 1] units implied by histograms (first class)."""
    centres = torch.linspace(-1 + 1 / bins, 1 - 1 / bins, bins)
    hists = torch.stack(histograms)[:, :bins]
    return float(((hists / hists.sum(-1, keepdim=True)) * centres).sum(-1).mean())
