"""Sets of masks on disk: an npz with a `masks` array (N, D, H, W), or a folder of NIfTI/NRRD/MHA masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LeFusionError
from ..io import Volume, has_volume_suffix, read_volume, write_volume
from .shape import DESCRIPTORS, shape_descriptors, shape_distance


def load_mask_set(path: str | Path, limit: int | None = None) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    """-> (boolean masks (D, H, W), spacing (z, y, x) mm). Errors name the path."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as data:
            if "masks" not in data:
                raise LeFusionError(f"{path}: npz has no 'masks' array")
            masks = [m > 0 for m in data["masks"][:limit]]
            spacing = tuple(float(v) for v in data["spacing_mm"]) if "spacing_mm" in data else (1.0, 1.0, 1.0)
        return masks, spacing  # type: ignore[return-value]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if has_volume_suffix(p))[:limit]
        if not files:
            raise LeFusionError(f"{path}: no mask files (.nii.gz, .nii, .nrrd, .mha) in this folder")
        volumes = [read_volume(f) for f in files]
        return [v.array > 0 for v in volumes], volumes[0].geometry.spacing
    raise LeFusionError(f"{path}: expected an .npz with a 'masks' array or a folder of mask volumes")


def write_mask_set(
    masks: list[np.ndarray], out: str | Path, prefix: str = "mask", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> list[Path]:
    """Write masks as uint8 NIfTI files (label 1), atomically, ready for `lefusion generate`."""
    from ..io import Geometry

    out = Path(out)
    geometry = Geometry(spacing=spacing)
    return [write_volume(Volume(m.astype(np.uint8), geometry), out / f"{prefix}_{i:04d}.nii.gz") for i, m in enumerate(masks)]


def shape_table(candidates: dict[str, list[np.ndarray]], reference: list[np.ndarray], spacing: tuple[float, float, float]) -> str:
    """Markdown table: per-descriptor normalised Wasserstein distance of each candidate set to `reference`."""
    ref = [shape_descriptors(m, spacing) for m in reference]
    lines = ["| set | n | " + " | ".join(DESCRIPTORS) + " | score |", "|---|---|" + "---|" * (len(DESCRIPTORS) + 1)]
    for name, masks in candidates.items():
        dist = shape_distance([shape_descriptors(m, spacing) for m in masks], ref, reference=ref)
        lines.append(f"| {name} | {len(masks)} | " + " | ".join(f"{dist[k]:.3f}" for k in DESCRIPTORS) + f" | **{dist['score']:.3f}** |")
    return "\n".join(lines)


def _training_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir() and (path / "lidc_masks_train.npz").is_file():
        return path / "lidc_masks_train.npz"
    return path


def load_training_ratings(path: str | Path, names: Sequence[str]) -> np.ndarray:
    """Ratings (N, K) float of the masks :func:`load_training_masks` reads from the same `path`,
    columns in the order of `names`, NaN where no reader rated: the `ratings` / `rating_names`
    arrays of a `lefusion masks lidc` npz. LeFusionError naming the path when it has none."""
    path = _training_path(path)
    try:
        with np.load(path) as data:
            table, columns = data["ratings"], [str(v) for v in data["rating_names"]]
    except (OSError, KeyError, ValueError) as exc:
        raise LeFusionError(
            f"{path}: no 'ratings' / 'rating_names' arrays ({exc}); attributes need rated masks: "
            "rebuild them with `lefusion masks lidc` (this version stores the radiologists' ratings)"
        ) from exc
    missing = [n for n in names if n not in columns]
    if missing:
        raise LeFusionError(f"{path}: its ratings have no {', '.join(missing)} (it has {', '.join(columns)})")
    return np.asarray(table, dtype=np.float64)[:, [columns.index(n) for n in names]]


def load_training_masks(path: str | Path) -> np.ndarray:
    """Masks (N, D, H, W) for DiffMask training from an npz, a `masks lidc` folder (its train split)
    or a folder of equally-shaped 1 mm mask volumes; LeFusionError naming the path otherwise."""
    path = _training_path(path)
    masks, spacing = load_mask_set(path)
    if not np.allclose(spacing, 1.0, atol=1e-3):
        raise LeFusionError(f"{path}: DiffMask trains on 1 mm isotropic masks, these have spacing {spacing} mm")
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise LeFusionError(f"{path}: masks must all have one shape (a box centred on the lesion), found {sorted(shapes)}")
    return np.stack(masks)
