"""The one signature every non-learned baseline has, so the generation pipeline can call any of them.

    baseline(image, label, lesion_labels, generator, **params) -> BaselineOutput

image: (D, H, W) float ROI in the model's [-1, 1] units; label: (D, H, W) integer label ids;
lesion_labels: the lesion class ids to fill (class i = lesion_labels[i]); generator: the only
source of randomness. Method parameters are keyword-only, bound per output by the caller
(`functools.partial`). Voxels outside the lesion classes are returned unchanged, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class BaselineOutput:
    """image: (D, H, W), same dtype as the input; record: JSON-ready provenance for the manifest."""

    image: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


class Baseline(Protocol):
    def __call__(
        self, image: np.ndarray, label: np.ndarray, lesion_labels: tuple[int, ...], generator: torch.Generator
    ) -> BaselineOutput: ...
