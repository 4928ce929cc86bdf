"""The MNI152 template the brain phantom is built on, and the tissue maps derived from it.

`nilearn` wheels ship the ICBM 2009a symmetric template (T1) and its grey / white matter
probability maps (197 x 233 x 189 voxels of 1 mm, uint8 = probability x 255, RAS storage). They
hold no CSF map and no brain mask, so those are derived here:

- brain envelope: grey + white matter > 0.3, closed with a 4 mm ball (which takes in the sulcal
  CSF between gyri) and hole-filled (which takes in the ventricles);
- CSF probability: what the envelope holds that is neither grey nor white matter (1 - gm - wm);
- lateral ventricles: CSF > 0.6 more than 14 mm inside the envelope, the large components off
  the mid-sagittal plane (sulcal CSF lies near the surface; the midline piece holds the third
  and fourth ventricles, the cisterns and the deep interhemispheric fissure, and is left out).

The shipped T1 is itself brain-extracted (zero outside the intracranial space), so there is no
skull to borrow: `brain.py` draws skull and scalp as shells around the envelope when asked.

The gm / wm files are read with nibabel through the installed package's folder, without importing nilearn
(its import takes seconds). Arrays are re-ordered to the project's (D, H, W) = (z, y, x) and flipped
so that the storage is LPS with an identity direction; the world coordinates stay MNI mm.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import LeFusionError

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
INSTALL_HINT = "pip install 'lefusion[brain]'"
# LPS world (x, y, z) mm of template voxel (z, y, x) = (0, 0, 0) after the flips (MNI affine: RAS
# origin (-98, -134, -72), so x_LPS = x' - 98, y_LPS = y' - 98, z = z' - 72).
TEMPLATE_ORIGIN_XYZ = (-98.0, -98.0, -72.0)


@dataclass(frozen=True)
class BrainTemplate:
    """Tissue maps on the template grid (1 mm, (D, H, W) = (189, 233, 197), LPS storage).

    gm, wm, csf: float32 probabilities in [0, 1] (csf only inside the envelope); ventricles and
    envelope: bool."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    envelope: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.gm.shape)  # type: ignore[return-value]


def template_folder() -> Path:
    """The folder inside the installed nilearn package that holds the MNI152 files."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise LeFusionError(
            f"the brain phantom is built on the MNI152 template shipped with nilearn, which is not installed: {INSTALL_HINT}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [TEMPLATE.format(k) for k in ("gm", "wm") if not (folder / TEMPLATE.format(k)).is_file()]
    if missing:
        raise LeFusionError(f"{folder}: the installed nilearn lacks {', '.join(missing)}; reinstall it ({INSTALL_HINT})")
    return folder


def _read(folder: Path, kind: str) -> np.ndarray:
    """One template file as float32 / 255, (z, y, x), LPS (x and y flipped from RAS storage)."""
    import nibabel as nib

    path = folder / TEMPLATE.format(kind)
    try:
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several kinds for a damaged file
        raise LeFusionError(f"{path}: unreadable template file ({exc}); reinstall nilearn ({INSTALL_HINT})") from exc
    if data.ndim != 3:
        raise LeFusionError(f"{path}: expected a 3D template, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, ::-1] / np.float32(255.0))


def _close(mask: np.ndarray, radius_mm: float) -> np.ndarray:
    """Morphological closing with a ball, by distance transforms (faster than a big structuring
    element on a 9 M voxel grid)."""
    dilated = ndimage.distance_transform_edt(~mask) <= radius_mm
    return ndimage.distance_transform_edt(dilated) > radius_mm


@lru_cache(maxsize=1)
def load_template() -> BrainTemplate:
    """Read and derive the tissue maps once per process (about 5 s of one core: two distance transforms on 8.7 M voxels)."""
    folder = template_folder()
    gm, wm = (_read(folder, k) for k in ("gm", "wm"))
    envelope = ndimage.binary_fill_holes(_close(gm + wm > 0.3, 4.0))
    csf = np.where(envelope, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    depth = ndimage.distance_transform_edt(envelope)
    deep, n = ndimage.label((csf > 0.6) & (depth > 14.0))
    sizes = np.bincount(deep.ravel())[1:]
    # The lateral ventricles: big deep CSF pieces off the mid-sagittal plane (the midline piece is
    # the third / fourth ventricle with the cisterns and the deep interhemispheric fissure).
    midline = (gm.shape[2] - 1) // 2
    off_midline = ~np.isin(np.arange(1, n + 1), np.unique(deep[:, :, midline]))
    ventricles = np.isin(deep, 1 + np.flatnonzero((sizes >= 2000) & off_midline)) if n else np.zeros_like(envelope)
    return BrainTemplate(gm, wm, csf, ventricles, envelope)
