"""Image-quality metrics for synthetic lesions: numpy in, floats out.

Paired (a generated volume against the real volume it should resemble, same grid and units):
PSNR and SSIM over the whole ROI and over the lesion only. Unpaired (two sets of lesion patches):
sliced Wasserstein distance and MMD. Per output: lesion-histogram distance to a target histogram,
and the background-preservation error against the source volume.

Volumes are (D, H, W); patch sets are (N, P) (one flattened patch per row). `data_range` is the
span of possible values: 2 for the model's [-1, 1] ROI units (the ROI conventions map CT's HU
window and MRI's min-max onto [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..data.histograms import lesion_histogram, wasserstein_1d_hist

ROI_DATA_RANGE = 2.0


def _region(shape: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray:
    region = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if region.shape != shape:
        raise ValueError(f"mask shape {region.shape} differs from image shape {shape}")
    if not region.any():
        raise ValueError("the mask selects no voxel")
    return region


def psnr(generated: np.ndarray, real: np.ndarray, data_range: float = ROI_DATA_RANGE, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole volume or the voxels of `mask`.

    PSNR = 10 log10(R^2 / MSE), MSE = mean over the region of (generated - real)^2, R = data_range.
    generated, real: (D, H, W), same units; mask: (D, H, W) bool or None. inf when the region is
    identical.
    """
    if generated.shape != real.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {real.shape}")
    region = _region(real.shape, mask)
    a, b = np.asarray(real, np.float64)[region], np.asarray(generated, np.float64)[region]
    if np.array_equal(a, b):
        return float("inf")  # skimage would divide by zero (with a warning) to the same end
    return float(peak_signal_noise_ratio(a, b, data_range=data_range))


def _win_size(shape: tuple[int, ...], win_size: int) -> int:
    """The largest odd window <= win_size that fits every axis (skimage needs it to fit)."""
    fit = min(win_size, *shape)
    return fit if fit % 2 else fit - 1


def ssim(
    generated: np.ndarray, real: np.ndarray, data_range: float = ROI_DATA_RANGE, mask: np.ndarray | None = None, win_size: int = 7
) -> float:
    """Structural similarity (Wang et al. 2004) with a uniform 3-D window of `win_size` voxels.

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01 R)^2, C2 = (0.03 R)^2, R = data_range, statistics over the window around each voxel
    (skimage `structural_similarity`). Without a mask: skimage's mean SSIM (the map averaged away
    from the border, where the window would not fit). With a mask: the full SSIM map averaged over
    the mask voxels (so the lesion's SSIM includes the window's view of its immediate surroundings).
    The window shrinks to the largest odd size that fits the smallest axis (at least 3).
    """
    if generated.shape != real.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {real.shape}")
    win = _win_size(real.shape, win_size)
    if win < 3:
        raise ValueError(f"volume {real.shape} is too small for SSIM (every axis needs >= 3 voxels)")
    mean, full = structural_similarity(
        np.asarray(real, np.float64), np.asarray(generated, np.float64), data_range=data_range, win_size=win, full=True
    )
    if mask is None:
        return float(mean)
    return float(full[_region(real.shape, mask)].mean())


def random_directions(dim: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, dim) unit vectors, uniform on the sphere (normalised Gaussians), seeded."""
    theta = np.random.default_rng(seed).standard_normal((n, dim))
    return theta / np.linalg.norm(theta, axis=1, keepdims=True)


def _as_sets(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"need two non-empty sets of equally sized samples, got {x.shape} and {y.shape}")
    return x, y


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two sample sets (sizes may differ).

    SW1(X, Y) = mean over L random unit directions theta of W1(theta . X, theta . Y), where W1 is
    the exact 1-D Wasserstein-1 distance between the empirical distributions of the projections
    (scipy `wasserstein_distance`). x: (N, ...), y: (M, ...), flattened to (N, P), (M, P);
    directions from `random_directions(P, L, seed)`. Translating every y by s gives
    mean_theta |theta . s| (= |s| for P = 1).
    """
    x, y = _as_sets(x, y)
    theta = random_directions(x.shape[1], n_projections, seed)
    px, py = x @ theta.T, y @ theta.T
    return float(np.mean([wasserstein_distance(px[:, i], py[:, i]) for i in range(n_projections)]))


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance over distinct pairs of the rows of z (N, P);
    1.0 if that median is 0 (e.g. all rows equal), so the kernel stays defined."""
    sq = _squared_distances(z, z)
    upper = sq[np.triu_indices(len(z), k=1)]
    median = float(np.sqrt(np.median(upper))) if len(upper) else 0.0
    return median if median > 0 else 1.0


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)  # rounding can make ||a - a||^2 slightly negative


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Maximum mean discrepancy with a Gaussian kernel (biased V-statistic), as a distance.

    MMD^2 = mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y),  K(a, b) = exp(-||a - b||^2 / (2 sigma^2)),
    returned as sqrt(max(MMD^2, 0)). sigma = `bandwidth`, or by the median heuristic
    (`median_bandwidth`) over the pooled samples X u Y. Exactly 0 for identical sets.
    x: (N, ...), y: (M, ...), flattened to (N, P), (M, P).
    """
    x, y = _as_sets(x, y)
    z = np.concatenate([x, y])
    sigma = median_bandwidth(z) if bandwidth is None else float(bandwidth)
    kernel = np.exp(-_squared_distances(z, z) / (2.0 * sigma**2))
    n = len(x)
    value = kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()
    return float(np.sqrt(max(value, 0.0)))


def histogram_distance(
    image: np.ndarray, label: np.ndarray, target: Sequence[float], lesion_labels: tuple[int, ...], bins: int = 16
) -> float:
    """Mean over lesion classes of the 1-D Wasserstein distance (in [-1, 1] units) between the
    lesion histogram of `image` and the `target` histogram.

    image: (D, H, W) in [-1, 1]; label: (D, H, W) label ids; target: (K * bins,) concatenated class
    histograms (e.g. a generation condition). Histograms as `lesion_histogram`; W1 as
    `wasserstein_1d_hist`. A class absent from the image or empty in the target is skipped; nan if
    no class is left.
    """
    hist = lesion_histogram(torch.as_tensor(np.asarray(image, np.float32)), torch.as_tensor(np.asarray(label)), lesion_labels, bins)
    own = hist.view(len(lesion_labels), bins)
    goal = torch.as_tensor(np.asarray(target, np.float32)).view(len(lesion_labels), bins)
    keep = (own.sum(-1) > 0) & (goal.sum(-1) > 0)
    if not keep.any():
        return float("nan")
    return float(wasserstein_1d_hist(own[keep], goal[keep]).mean())


def background_error(generated: np.ndarray, source: np.ndarray, lesion: np.ndarray) -> tuple[float, float]:
    """(max, mean) of |generated - source| over the voxels outside `lesion`, in the volumes' units.

    generated, source: (D, H, W); lesion: (D, H, W) bool, True where lesions were generated.
    Both 0 exactly when the background was kept bit for bit (LeFusion and the baselines guarantee it).
    """
    if generated.shape != source.shape or lesion.shape != source.shape:
        raise ValueError(f"shapes differ: {generated.shape}, {source.shape}, mask {lesion.shape}")
    outside = ~np.asarray(lesion, dtype=bool)
    if not outside.any():
        return 0.0, 0.0
    diff = np.abs(np.asarray(generated, np.float64)[outside] - np.asarray(source, np.float64)[outside])
    return float(diff.max()), float(diff.mean())
