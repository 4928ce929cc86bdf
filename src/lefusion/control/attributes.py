"""Radiologist attributes as controls: LIDC shape ratings for DiffMask, texture classes for LeFusion.

Shape ratings. LIDC-IDRI readers rate every nodule >= 3 mm on 1..5 scales (Armato et al. 2011;
``lidc_db.RATINGS``); the four that describe the outline are

- sphericity: 1 linear ... 3 ovoid ... 5 round;
- margin: 1 poorly defined ... 5 sharp;
- lobulation: 1 none ... 5 marked;
- spiculation: 1 none ... 5 marked.

A DiffMask trained with attributes gets them through the denoiser's condition vector (``cond_dim``,
the input LeFusion uses for histograms), encoded as 2K numbers for K attributes: per attribute the
rating mapped to [-1, 1] by (r - 3) / 2 when it is given, else 0, followed by K flags, 1 where the
rating is given. The all-zero vector is the null condition: "no attribute asked for". Training
drops the whole condition with probability ``cond_drop`` and each attribute alone with
``attribute_drop``, so the model also learns the unconditional and the partly conditioned
distributions, which classifier-free guidance (Ho & Salimans 2022) needs; :mod:`lefusion.diffusion.guidance`.

Texture classes. LIDC's texture rating (1 non-solid / ground glass, 2 non-solid / mixed, 3
part-solid, 4 solid / mixed, 5 solid) is grouped into three classes; a LeFusion checkpoint maps
each class to one of its histogram presets (``extra["texture_classes"]``, 1-based preset numbers as
``--preset`` takes them); :func:`texture_classes_from_rated` makes that mapping for a model from
rated training lesions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import LeFusionError

SHAPE_ATTRIBUTES = ("sphericity", "margin", "lobulation", "spiculation")
RATING_MIN, RATING_MAX = 1.0, 5.0
DEFAULT_COND_DROP = 0.15
DEFAULT_ATTRIBUTE_DROP = 0.1
ENCODING = "per attribute (r - 3) / 2 when given else 0, then one given-flag per attribute; all zeros = no condition"

TEXTURE_CLASSES = ("ground-glass", "part-solid", "solid")
# LIDC texture rating -> class: 1-2 non-solid (ground glass), 3 part-solid, 4-5 solid.
_TEXTURE_OF_RATING = {1: "ground-glass", 2: "ground-glass", 3: "part-solid", 4: "solid", 5: "solid"}


def check_rating(name: str, value: float) -> float:
    """A rating as float, or LeFusionError when it is not a number in 1..5."""
    try:
        rating = float(value)
    except (TypeError, ValueError) as exc:
        raise LeFusionError(f"{name} rating must be a number from 1 to 5, got {value!r}") from exc
    if not (RATING_MIN <= rating <= RATING_MAX):
        raise LeFusionError(f"{name} rating must be from 1 to 5 (LIDC scale), got {value!r}")
    return rating


def check_attributes(requested: Mapping[str, float | None] | None, known: Sequence[str], model: str) -> dict[str, float]:
    """The given ratings of `requested` (None values dropped), validated against the attributes
    `known` to the model named `model`. LeFusionError for an unknown name, a rating outside 1..5,
    or any rating asked of a model trained without attribute conditioning."""
    given = {k: v for k, v in (requested or {}).items() if v is not None}
    if not given:
        return {}
    if not known:
        raise LeFusionError(
            f"{model}: this DiffMask was trained without attribute conditioning, so it cannot follow "
            f"{', '.join(f'--{k}' for k in given)}; use a model trained with `lefusion masks train --attributes ...` "
            "(the bundled diffmask_lidc is one)"
        )
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise LeFusionError(f"{model}: conditioned on {', '.join(known)}, not on {', '.join(unknown)}")
    return {k: check_rating(k, v) for k, v in given.items()}


def encode_ratings(ratings: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Ratings (N, K) float, NaN where not given, in the order of `names` -> condition (N, 2K)
    float32 (module docstring). Rows of all NaN give the null condition (zeros)."""
    ratings = np.asarray(ratings, dtype=np.float64).reshape(-1, len(names))
    given = np.isfinite(ratings)
    values = np.where(given, (np.where(given, ratings, 3.0) - 3.0) / 2.0, 0.0)
    return np.concatenate([values, given.astype(np.float64)], axis=1).astype(np.float32)


def ratings_row(requested: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """A request {name: rating} -> (K,) float with NaN for the attributes not asked for."""
    return np.array([float(requested[n]) if n in requested else math.nan for n in names], dtype=np.float64)


def drop_conditions(cond: np.ndarray, u_all: np.ndarray, u_each: np.ndarray, cond_drop: float, attribute_drop: float) -> np.ndarray:
    """Classifier-free-guidance dropout of a batch of encoded conditions (B, 2K): rows where
    u_all (B,) < cond_drop become the null condition; attribute k of a row is dropped (value and
    flag zeroed) where u_each (B, K) < attribute_drop. u_*: uniform [0, 1) draws."""
    k = cond.shape[1] // 2
    keep = (u_each >= attribute_drop) & (u_all[:, None] >= cond_drop)
    keep2 = np.concatenate([keep, keep], axis=1)
    return np.where(keep2, cond, 0.0).astype(np.float32).reshape(-1, 2 * k)


def texture_class_of_rating(rating: float) -> str:
    """LIDC texture rating 1..5 (a reader median may be a half: rounded half up) -> class name."""
    value = check_rating("texture", rating)
    return _TEXTURE_OF_RATING[int(math.floor(value + 0.5))]


def check_texture_class(name: str) -> str:
    if name not in TEXTURE_CLASSES:
        raise LeFusionError(f"texture class must be one of {', '.join(TEXTURE_CLASSES)}, got {name!r}")
    return name


def texture_preset(mapping: Mapping[str, int] | None, texture_class: str, model: str) -> int:
    """The 1-based preset number a checkpoint's ``extra["texture_classes"]`` gives `texture_class`;
    LeFusionError naming the model when it records no mapping or lacks that class."""
    check_texture_class(texture_class)
    if not mapping:
        raise LeFusionError(
            f"{model}: records no texture-class -> preset mapping (extra.texture_classes); make one with "
            "`lefusion texture-classes` from rated training lesions, or pick a --preset"
        )
    if texture_class not in mapping:
        raise LeFusionError(f"{model}: its texture-class mapping has no {texture_class!r} (it has {', '.join(mapping)})")
    return int(mapping[texture_class])


def texture_classes_from_rated(histograms: np.ndarray, ratings: Sequence[float], presets: Sequence[Sequence[float]]) -> dict[str, int]:
    """Texture-class -> preset mapping from rated training lesions.

    histograms: (N, C) each lesion's histogram condition; ratings: (N,) its LIDC texture rating;
    presets: (P, C) the model's presets. Every lesion votes for its nearest preset (Euclidean, as
    k-means assigns it); a class takes the preset most of its lesions are nearest to, relative to
    that preset's share of all lesions (so a preset that holds most lesions does not take every
    class). Classes without lesions are left out. Returns {class: 1-based preset number}.
    """
    hist = np.asarray(histograms, dtype=np.float64)
    centres = np.asarray(presets, dtype=np.float64)
    if hist.ndim != 2 or centres.ndim != 2 or hist.shape[1] != centres.shape[1]:
        raise LeFusionError(f"histograms {hist.shape} and presets {centres.shape} must be (N, C) and (P, C) with one C")
    if len(ratings) != len(hist):
        raise LeFusionError(f"{len(ratings)} ratings for {len(hist)} histograms")
    nearest = np.argmin(((hist[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    share = np.bincount(nearest, minlength=len(centres)) / max(len(nearest), 1)
    classes = np.array([texture_class_of_rating(r) for r in ratings])
    mapping = {}
    for name in TEXTURE_CLASSES:
        votes = np.bincount(nearest[classes == name], minlength=len(centres))
        if votes.sum():
            mapping[name] = int(np.argmax(votes / votes.sum() / np.maximum(share, 1e-12))) + 1
    return mapping
