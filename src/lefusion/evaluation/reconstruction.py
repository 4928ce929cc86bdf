"""How close is a generated scan to the real scan it was generated from? Lesion-region MAE / MSE and MS-SSIM.

The Lesion-DDPM paper scores its synthetic FLAIR volumes against the real scans whose masks they
were generated from: mean absolute and squared error inside the lesions and the multi-scale SSIM
of the volume. Every method that regenerates a known scan's lesions (`lefusion generate` on the
real pathological cases: LeFusion and the baselines inpaint the real lesion masks; Lesion-DDPM
draws the whole volume from the real masks and anatomy) can be scored that way, which is what
`evaluate_reconstruction` does for one `generate` output folder.

Units: both volumes are put on the real scan's scale, x -> (x - lo) / (hi - lo) with (lo, hi) the
0.5 / 99.5 percentiles of the real scan's intensities inside the organ (the brain), then clipped
to [0, 1] — MRI has no absolute unit, so errors are fractions of the real scan's brain intensity
range. MAE / MSE: over the real lesion voxels. MS-SSIM (Wang et al. 2003; MONAI's implementation,
Gaussian window 5 voxels, sigma 1.5): over the organ's bounding box, with as many of the standard
five scale weights as the box allows (each scale halves the size; the window must fit the smallest).
Inpainting methods keep the background exactly, so their MS-SSIM differs from 1 only through the
lesions; for a whole-volume generator it measures the anatomy as well.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import LeFusionError
from ..io import atomic_write_text, read_volume

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, the five scales
MS_SSIM_KERNEL = 5
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class ReconstructionScores:
    """One generated scan against its real scan (module docstring for the units)."""

    case: str
    lesion_voxels: int
    mae_lesion: float
    mse_lesion: float
    ms_ssim: float
    scales: int


def organ_range(image: np.ndarray, organ: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """(lo, hi): robust intensity percentiles of `image` (D, H, W) inside `organ` (D, H, W) bool."""
    if not organ.any():
        raise LeFusionError("the organ mask is empty; cannot scale the intensities")
    lo, hi = (float(v) for v in np.percentile(image[organ], percentiles))
    return lo, (hi if hi > lo else lo + 1.0)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(where.min(axis=0), where.max(axis=0)))


def _fits(size: int, scales: int) -> bool:
    """Whether an axis of `size` voxels takes `scales` levels: the window fits the coarsest level
    (size // 2^(scales-1) >= kernel), and MONAI's own up-front size rule holds."""
    return size // 2 ** (scales - 1) >= MS_SSIM_KERNEL and size // max(1, scales - 1) ** 2 > MS_SSIM_KERNEL - 1


def ms_ssim(generated: np.ndarray, real: np.ndarray) -> tuple[float, int]:
    """(MS-SSIM, number of scales) of two (D, H, W) volumes in [0, 1]. Scales: as many of the five
    as keep the window inside the coarsest level (`_fits`); the weights used are renormalised to
    sum to one."""
    import torch
    from monai.metrics.regression import compute_ms_ssim

    if generated.shape != real.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {real.shape}")
    smallest = min(real.shape)
    if smallest < MS_SSIM_KERNEL:
        raise ValueError(f"volume {real.shape} is too small for MS-SSIM (every axis needs >= {MS_SSIM_KERNEL} voxels)")
    scales = max(n for n in range(1, len(MS_SSIM_WEIGHTS) + 1) if _fits(smallest, n))
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
    weights = tuple(float(w) for w in weights / weights.sum())
    x = torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float32))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float32))[None, None]
    value = compute_ms_ssim(x, y, spatial_dims=3, data_range=1.0, kernel_size=MS_SSIM_KERNEL, weights=weights)
    return float(value.reshape(-1)[0]), scales


def score_reconstruction(case: str, generated: np.ndarray, real: np.ndarray, lesion: np.ndarray, organ: np.ndarray) -> ReconstructionScores:
    """Scores of one generated (D, H, W) volume against its real (D, H, W) volume; lesion and organ
    (D, H, W) bool masks of the real scan."""
    if generated.shape != real.shape:
        raise LeFusionError(f"{case}: generated volume {generated.shape} and real volume {real.shape} differ in shape")
    if not np.isfinite(generated).all():
        raise LeFusionError(f"{case}: the generated volume holds NaN or infinite values")
    lo, hi = organ_range(real.astype(np.float64), organ)
    scale = lambda v: np.clip((v.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    g, r = scale(generated), scale(real)
    n = int(lesion.sum())
    diff = (g - r)[lesion]
    box = _bounding_box(organ)
    value, scales = ms_ssim(g[box], r[box])
    return ReconstructionScores(
        case, n, float(np.abs(diff).mean()) if n else math.nan, float((diff**2).mean()) if n else math.nan, value, scales
    )


def _organ(organs: Path | None, source_image: Path, real_image: np.ndarray) -> np.ndarray:
    if organs is not None:
        path = organs / source_image.name
        if not path.is_file():
            raise LeFusionError(f"{path}: no organ label map for {source_image.name}")
        return read_volume(path).array > 0
    return real_image > 0  # skull-stripped: the brain is where the scan is non-zero


def evaluate_reconstruction(generated: str | Path, organs: str | Path | None, out: str | Path) -> dict:
    """Score every output of the `lefusion generate` folder `generated` against the real scan it
    names as its source (the manifest's `source_image`; the lesion = the output's label map > 0).
    organs: folder of organ label maps named like the real scans (None: the real scan's non-zero
    voxels). Writes OUT/reconstruction.json (per case + means) and returns it."""
    generated, out = Path(generated), Path(out)
    organs = Path(organs) if organs is not None else None
    manifest_path = generated / "manifest.json"
    if not manifest_path.is_file():
        raise LeFusionError(f"{generated}: no manifest.json (not a `lefusion generate` output folder)")
    entries = json.loads(manifest_path.read_text()).get("outputs", {})
    if not entries:
        raise LeFusionError(f"{manifest_path}: lists no outputs")
    rows, method = [], None
    for name, entry in sorted(entries.items()):
        if not entry.get("source_image"):
            raise LeFusionError(f"{manifest_path}: {name} names no source image (generated from masks alone; nothing to compare with)")
        source = Path(entry["source_image"])
        if not source.is_absolute() and not source.is_file():
            source = (generated / source).resolve() if (generated / source).is_file() else source
        if not source.is_file():
            raise LeFusionError(f"{manifest_path}: {name}'s source image {source} is not readable")
        real = read_volume(source).array.astype(np.float64)
        image = read_volume(generated / entry["image"]).array.astype(np.float64)
        label = read_volume(generated / entry.get("label", entry.get("mask", ""))).array  # generate: labels/; lesion-ddpm: masks/
        method = entry.get("method", method)
        rows.append(score_reconstruction(name, image, real, label > 0, _organ(organs, source, real)))
    finite = lambda key: [getattr(r, key) for r in rows if math.isfinite(getattr(r, key))]
    summary = {
        "method": method,
        "cases": len(rows),
        **{key: (float(np.mean(finite(key))) if finite(key) else math.nan) for key in ("mae_lesion", "mse_lesion", "ms_ssim")},
        "per_case": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "reconstruction.json", json.dumps(summary, indent=1))
    return summary
