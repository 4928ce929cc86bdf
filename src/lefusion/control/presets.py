"""Histogram presets: the texture-control conditions a model ships with.

A preset is one condition vector: K lesion-class histograms of `bins` values, concatenated. The
public release stores presets as k-means centres, `[{"n_class": k, "centers": [[...], ...]}]`;
for a single-class model each centre is a preset (LIDC: 3, roughly ground-glass / part-solid /
solid), for a K-class model the K centres are one preset (EMIDEC: MI then PMO).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LeFusionError


def presets_from_centres(centres: list[list[float]], cond_dim: int) -> list[tuple[float, ...]]:
    """Turn k-means centres into presets of length cond_dim (see module docstring)."""
    if not centres:
        raise ValueError("no histogram centres")
    width = len(centres[0])
    if any(len(c) != width for c in centres):
        raise ValueError("histogram centres have different lengths")
    if width == cond_dim:
        return [tuple(float(v) for v in c) for c in centres]
    if width * len(centres) == cond_dim:
        return [tuple(float(v) for c in centres for v in c)]
    raise ValueError(f"{len(centres)} centres of {width} values cannot form presets of {cond_dim} values")


def read_presets(path: str | Path, cond_dim: int) -> list[tuple[float, ...]]:
    """Read presets from the public release's cluster JSON or from a plain list of vectors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LeFusionError(f"{path}: unreadable histogram preset file ({exc})") from exc
    if isinstance(data, list) and data and isinstance(data[0], dict) and "centers" in data[0]:
        centres = data[0]["centers"]
    elif isinstance(data, dict) and "hist_presets" in data:
        centres = data["hist_presets"]
    elif isinstance(data, list) and data and isinstance(data[0], list):
        centres = data
    else:
        raise LeFusionError(f"{path}: expected [{{'centers': [[...], ...]}}] or a list of histograms")
    try:
        return presets_from_centres(centres, cond_dim)
    except ValueError as exc:
        raise LeFusionError(f"{path}: {exc}") from exc
