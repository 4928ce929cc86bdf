"""Fixed-size lesion patches for unpaired set metrics (sliced Wasserstein, MMD).

One patch per lesion: a connected component (26-connectivity) of the union of the lesion classes.
The patch is a cube of `size` voxels of the image, lesion in its context, centred on the
component's centroid (rounded to a voxel) and filled with `pad_value` where it leaves the volume,
so lesions near the border still give full-size patches.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data.roi import PAD_VALUE


def lesion_centroids(label: np.ndarray, lesion_labels: tuple[int, ...]) -> list[np.ndarray]:
    """Centroids (z, y, x) in voxels, one per connected lesion, ordered by component label."""
    lesion = np.isin(label, lesion_labels)
    components, n = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    return [np.asarray(c, dtype=np.float64) for c in ndimage.center_of_mass(lesion, components, range(1, n + 1))]


def extract_patch(image: np.ndarray, centre: np.ndarray, size: tuple[int, int, int], pad_value: float = PAD_VALUE) -> np.ndarray:
    """The (size) cube of image (D, H, W) whose voxel size // 2 sits on round(centre); padded."""
    size = tuple(int(s) for s in size)
    start = np.rint(centre).astype(np.int64) - np.asarray(size) // 2
    patch = np.full(size, pad_value, dtype=np.float32)
    src, dst = [], []
    for axis, (s, n) in enumerate(zip(start, size)):
        lo, hi = max(s, 0), min(s + n, image.shape[axis])
        if hi <= lo:
            return patch  # entirely outside: only padding
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    patch[tuple(dst)] = image[tuple(src)]
    return patch


def lesion_patches(
    image: np.ndarray, label: np.ndarray, lesion_labels: tuple[int, ...], size: tuple[int, int, int] = (16, 16, 16)
) -> np.ndarray:
    """(N, *size) float32 patches, one per connected lesion of `label` in `image` (both (D, H, W))."""
    patches = [extract_patch(image, c, size) for c in lesion_centroids(label, lesion_labels)]
    return np.stack(patches) if patches else np.zeros((0, *size), dtype=np.float32)
