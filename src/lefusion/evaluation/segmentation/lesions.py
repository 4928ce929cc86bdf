"""Lesion-level detection on whole scans: sensitivity and false positives per scan.

On a whole scan a voxel score hides what a reader sees: a segmenter can score a decent Dice on
the big nodules and still miss the small ones, or mark twenty blobs in the liver. So lesions are
counted as objects, connected components with full (26-) connectivity:

- a reference lesion is **detected** when at least one predicted voxel lies on it (the lenient
  "any overlap" rule of detection challenges such as LUNA16's, which score one point per lesion);
- a predicted component that touches no reference lesion is a **false positive**, and one whose
  voxels lie mostly (more than half) outside the organ mask (the lungs) is also counted as a
  **false positive outside the organ**: on whole scans those are the ones a lung-restricted
  training ROI never sees, and they matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


@dataclass(frozen=True)
class LesionCounts:
    """Object counts of one scan (module docstring for the rules)."""

    reference_lesions: int
    detected: int
    false_positives: int
    false_positives_outside_organ: int


def count_lesions(prediction: np.ndarray, reference: np.ndarray, organ: np.ndarray | None = None) -> LesionCounts:
    """Detection counts of bool masks prediction, reference (D, H, W); `organ` (D, H, W) bool, or
    None to count no false positive as outside."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape or (organ is not None and organ.shape != reference.shape):
        raise ValueError(
            f"shapes differ: prediction {prediction.shape}, reference {reference.shape}, organ {None if organ is None else organ.shape}"
        )
    ref_labels, n_ref = ndimage.label(reference, _FULL)
    detected = len(np.setdiff1d(np.unique(ref_labels[prediction]), [0]))
    pred_labels, n_pred = ndimage.label(prediction, _FULL)
    if n_pred == 0:
        return LesionCounts(int(n_ref), int(detected), 0, 0)
    index = np.arange(1, n_pred + 1)
    hits_reference = ndimage.maximum(reference, pred_labels, index) > 0
    false = ~np.asarray(hits_reference, bool)
    outside = np.zeros_like(false)
    if organ is not None:
        inside_fraction = np.asarray(ndimage.mean(np.asarray(organ, bool), pred_labels, index))
        outside = false & (inside_fraction <= 0.5)
    return LesionCounts(int(n_ref), int(detected), int(false.sum()), int(outside.sum()))
