"""Data layer: find cases on disk, cut and scale ROIs (invertibly), lesion histograms, the dataset."""

from .dataset import LesionRoiDataset, random_flip
from .histograms import lesion_histogram, wasserstein_1d_hist
from .layouts import LAYOUTS, Case, detect_layout, find_cases
from .roi import IntensityMapping, Roi, RoiBox, prepare_roi, restore_roi, validate_pair

__all__ = [
    "LAYOUTS",
    "Case",
    "IntensityMapping",
    "LesionRoiDataset",
    "Roi",
    "RoiBox",
    "detect_layout",
    "find_cases",
    "lesion_histogram",
    "prepare_roi",
    "random_flip",
    "restore_roi",
    "validate_pair",
    "wasserstein_1d_hist",
]
