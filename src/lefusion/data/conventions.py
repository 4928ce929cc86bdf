"""Dataset conventions: which label ids are lesions, which others may appear, how ROIs are cut.

A checkpoint records the conventions it was trained with (`ModelConfig`); without one they follow
from the dataset's layout (`conventions_for`). Every layer above the data reads them from here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import BRAIN_PREPROCESS, EMIDEC_PREPROCESS, LIDC_PREPROCESS, ModelConfig, PreprocessConfig
from .layouts import EMIDEC, detect_layout


@dataclasses.dataclass(frozen=True)
class DataConventions:
    """Lesion labels, labels allowed besides them (None: only 0 and the lesion labels), and ROI preprocessing."""

    lesion_labels: tuple[int, ...]
    allowed_labels: tuple[int, ...] | None
    preprocess: PreprocessConfig

    @classmethod
    def of_model(cls, config: ModelConfig) -> DataConventions:
        """The conventions a checkpoint was trained with."""
        return cls(config.lesion_labels, config.allowed_labels, config.preprocess)

    @property
    def context_labels(self) -> tuple[int, ...]:
        """Non-lesion labels that may appear (EMIDEC: 1 = cavity, 2 = myocardium)."""
        return tuple(sorted(set(self.allowed_labels or ()) - {0, *self.lesion_labels}))


def conventions_for(
    root: Path, lesion_labels: tuple[int, ...] | None = None, preprocess: PreprocessConfig | None = None
) -> DataConventions:
    """Defaults by layout: EMIDEC -> labels 3, 4 (1, 2 anatomy), MRI 10x72x72; a brain phantom
    folder (its phantom.json says so) -> label 1, MRI 16x32x32 with brain-percentile intensities;
    every other layout -> label 1, CT 32x64x64. `lesion_labels` and `preprocess` override them."""
    if detect_layout(root) == EMIDEC:
        default = DataConventions((3, 4), (0, 1, 2, 3, 4), EMIDEC_PREPROCESS)
    elif _generator(Path(root)) == "lefusion.phantoms.brain":
        default = DataConventions((1,), None, BRAIN_PREPROCESS)
    else:
        default = DataConventions((1,), None, LIDC_PREPROCESS)
    labels = tuple(lesion_labels) if lesion_labels else default.lesion_labels
    allowed = default.allowed_labels
    if allowed is not None:
        allowed = tuple(sorted(set(allowed) | set(labels)))
    return DataConventions(labels, allowed, preprocess or default.preprocess)


def _generator(root: Path) -> str | None:
    """The phantom generator named in root/phantom.json, if any (an unreadable file names none)."""
    try:
        return json.loads((root / "phantom.json").read_text()).get("settings", {}).get("generator")
    except (OSError, ValueError, AttributeError):
        return None
