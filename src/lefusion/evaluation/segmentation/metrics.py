"""Dice, normalised surface Dice (NSD) and HD95 of one lesion class in one case, via MONAI.

Distances are in mm: the case's voxel spacing (z, y, x) is passed to MONAI in the array's axis order.

Empty masks (MONAI returns NaN or inf there; we decide instead, and say so in the report):

| reference | prediction | Dice | NSD | HD95 | counted as |
|---|---|---|---|---|---|
| lesion    | lesion     | MONAI | MONAI | MONAI | |
| lesion    | empty      | 0 | 0 | NaN | a miss |
| empty     | lesion     | 0 | 0 | NaN | a false alarm |
| empty     | empty      | 1 | 1 | NaN | (correctly empty) |

Dice and NSD are averaged over all test cases, so misses and false alarms lower them. HD95 has no
value without both surfaces: it is averaged over the cases where both masks are non-empty, and the
number of misses and false alarms is reported beside it rather than hidden in the mean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CaseScores:
    """Scores of one class in one case (see module docstring for the empty-mask conventions)."""

    dice: float
    nsd: float
    hd95: float  # mm; NaN unless both masks are non-empty
    reference_voxels: int
    predicted_voxels: int

    @property
    def missed(self) -> bool:
        return self.reference_voxels > 0 and self.predicted_voxels == 0

    @property
    def false_alarm(self) -> bool:
        return self.reference_voxels == 0 and self.predicted_voxels > 0


def score_case(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, float, float], nsd_tolerance: float = 1.0
) -> CaseScores:
    """Scores of binary masks prediction, reference (D, H, W) with voxel spacing (z, y, x) in mm;
    NSD counts surface points within `nsd_tolerance` mm of the other surface."""
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

    pred, ref = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 or n_ref == 0:
        agree = float(n_pred == n_ref)
        return CaseScores(agree, agree, math.nan, n_ref, n_pred)
    # MONAI wants one-hot, batch-first tensors: (B=1, C=1, D, H, W), class channel = this lesion.
    y_pred = torch.from_numpy(pred)[None, None].float()
    y = torch.from_numpy(ref)[None, None].float()
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about an argument its own surface code still passes; nothing for users to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        dice = DiceMetric(include_background=True, reduction="none")(y_pred, y)
        nsd = SurfaceDiceMetric([float(nsd_tolerance)], include_background=True, reduction="none")(y_pred, y, spacing=spacing)
        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(y_pred, y, spacing=spacing)
    return CaseScores(float(dice.item()), float(nsd.item()), float(hd95.item()), n_ref, n_pred)
