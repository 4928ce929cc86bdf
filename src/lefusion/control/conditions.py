"""Choosing the histogram condition for one generated lesion.

`--preset K` uses preset K (1-based); `mix` draws a preset with the paper's 5:20:75 ratio over
presets 1:2:3 (uniform if the model has another number of presets); a file gives an explicit
histogram. The published inference jitters each bin by up to +-10% of its value; we do the same
and then renormalise every class histogram to sum to 1 (the release did not renormalise, so its
conditions drifted slightly off the simplex the model was trained on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LeFusionError

PAPER_MIX = (0.05, 0.20, 0.75)
JITTER = 0.10


@dataclass(frozen=True)
class Condition:
    """One lesion's texture condition: the vector fed to the model and where it came from."""

    values: tuple[float, ...]
    preset: int | None  # 1-based preset id, None for a histogram from a file
    spec: str


def jitter_histogram(hist: torch.Tensor, bins: int, generator: torch.Generator, amount: float = JITTER) -> torch.Tensor:
    """Perturb every bin by a zero-mean random fraction of at most `amount` of its value, then
    renormalise each class's `bins` values to sum to 1. hist: (K*bins,) -> (K*bins,)."""
    u = torch.randn(hist.shape, generator=generator, dtype=torch.float64)
    u = u - u.mean()
    u = u / u.abs().max().clamp(min=1e-12)
    out = (hist.double() * (1 + amount * u)).clamp(min=0).view(-1, bins)
    sums = out.sum(dim=1, keepdim=True)
    out = torch.where(sums > 0, out / sums.clamp(min=1e-12), out)
    return out.view(-1).float()


def parse_preset_spec(spec: str | int) -> str | int:
    """'2' -> 2, 'mix' -> 'mix', anything else is a path to a histogram JSON."""
    if isinstance(spec, int):
        return spec
    return int(spec) if str(spec).isdigit() else str(spec)


def _file_histogram(path: Path, cond_dim: int) -> tuple[float, ...]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LeFusionError(f"{path}: unreadable histogram file ({exc})") from exc
    values = data.get("histogram") if isinstance(data, dict) else data
    if not isinstance(values, list) or len(values) != cond_dim or not all(isinstance(v, (int, float)) for v in values):
        raise LeFusionError(f'{path}: expected a list of {cond_dim} numbers (or {{"histogram": [...]}})')
    return tuple(float(v) for v in values)


def choose_condition(
    spec: str | int, presets: tuple[tuple[float, ...], ...], cond_dim: int, bins: int, generator: torch.Generator
) -> Condition:
    """Draw one condition for `spec` (see module docstring), jittered with `generator`."""
    spec = parse_preset_spec(spec)
    if spec == "mix":
        if not presets:
            raise LeFusionError("this model has no histogram presets; pass --preset FILE")
        weights = torch.tensor(PAPER_MIX if len(presets) == 3 else [1.0] * len(presets), dtype=torch.float64)
        preset = int(torch.multinomial(weights, 1, generator=generator)) + 1
        base = presets[preset - 1]
    elif isinstance(spec, int):
        if not 1 <= spec <= len(presets):
            raise LeFusionError(f"preset {spec} does not exist: this model has {len(presets)} preset(s), numbered from 1")
        preset, base = spec, presets[spec - 1]
    else:
        preset, base = None, _file_histogram(Path(spec), cond_dim)
    values = jitter_histogram(torch.tensor(base), bins, generator)
    return Condition(tuple(values.tolist()), preset, str(spec))
