"""Organ label ids of the chest phantom: TotalSegmentator v2 ("total" task) ids, so a user's own
TotalSegmentator output and the phantom's `organs/` maps are read the same way (lungs = lobes 10-14).

Only the structures the phantom draws are listed; everything else (fat, muscle, skin, mediastinal
fat, pulmonary arteries, intervertebral discs, the table) is 0, as in TotalSegmentator.
"""

from __future__ import annotations

ORGAN_LABELS: dict[str, int] = {
    "spleen": 1,
    "liver": 5,
    "stomach": 6,
    "lung_upper_lobe_left": 10,
    "lung_lower_lobe_left": 11,
    "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13,
    "lung_lower_lobe_right": 14,
    "esophagus": 15,
    "trachea": 16,  # the phantom's label covers the trachea and both main bronchi up to the hila
    **{f"vertebrae_L{k}": 32 - k for k in range(1, 6)},  # L1 = 31 ... L5 = 27
    **{f"vertebrae_T{k}": 44 - k for k in range(1, 13)},  # T1 = 43 ... T12 = 32
    "vertebrae_C7": 44,
    "heart": 51,
    "aorta": 52,
    "pulmonary_vein": 53,
    "brachiocephalic_trunk": 54,
    "subclavian_artery_left": 56,
    "common_carotid_artery_left": 58,
    "brachiocephalic_vein_left": 59,
    "superior_vena_cava": 62,
    "scapula_left": 71,
    "scapula_right": 72,
    "spinal_cord": 79,
    **{f"rib_left_{k}": 91 + k for k in range(1, 13)},  # 92 ... 103
    **{f"rib_right_{k}": 103 + k for k in range(1, 13)},  # 104 ... 115
    "sternum": 116,
    "costal_cartilages": 117,
}

LUNG_LEFT = (ORGAN_LABELS["lung_upper_lobe_left"], ORGAN_LABELS["lung_lower_lobe_left"])
LUNG_RIGHT = (ORGAN_LABELS["lung_upper_lobe_right"], ORGAN_LABELS["lung_middle_lobe_right"], ORGAN_LABELS["lung_lower_lobe_right"])
LUNG = LUNG_LEFT + LUNG_RIGHT
NODULE = 1  # the lesion label in masks/
