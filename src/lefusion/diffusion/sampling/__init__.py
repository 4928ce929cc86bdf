"""Samplers: one reverse loop (`base.SamplerConfig.sample`), one file per sampler, and the registry
that names them. Adding a sampler is adding its file and one entry in SAMPLERS.

    sampler = sampler_from_dict({"kind": "time-travel", "jump_length": 10, "jump_n_sample": 10})
    x = sampler.sample(Network(denoiser, cond), schedule, shape, Noise(generators), known)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .ancestral import Ancestral
from .base import Estimate, KnownRegion, Network, Noise, Sampler, SamplerConfig, reverse_step
from .ddim import DDIM
from .ddnm import DDNM
from .diffpir import DiffPIR
from .fewstep import FewStep
from .time_travel import TimeTravel

SAMPLERS: dict[str, type[SamplerConfig]] = {cls.kind: cls for cls in (Ancestral, TimeTravel, DDIM, DDNM, DiffPIR)}
PUBLISHED = TimeTravel(10, 10)  # the public release's sampler settings: `--sampler time-travel`
DEFAULT_FEW_STEP = DDNM()  # what --steps alone selects
# LeFusion's default: 25 network evaluations matched the published 10 x 10 time travel (970 for T = 100,
# 2,910 for T = 300) in histogram control and seam on the demo model (docs/benchmarks.md, issue #19).
DEFAULT = DDNM(steps=25)


def sampler_from_dict(record: Mapping[str, Any]) -> SamplerConfig:
    """{"kind": NAME, **settings} (a manifest's record) -> the sampler. Raises ValueError naming
    what is wrong: an unknown kind, or a setting the sampler does not have."""
    record = dict(record)
    kind = record.pop("kind", None)
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - names)
    if unknown:
        raise ValueError(f"sampler {kind!r} has no setting(s) {', '.join(unknown)} (it has: {', '.join(sorted(names)) or 'none'})")
    return cls(**record)


__all__ = [
    "DEFAULT",
    "DEFAULT_FEW_STEP",
    "PUBLISHED",
    "SAMPLERS",
    "DDIM",
    "DDNM",
    "Ancestral",
    "DiffPIR",
    "Estimate",
    "FewStep",
    "KnownRegion",
    "Network",
    "Noise",
    "Sampler",
    "SamplerConfig",
    "TimeTravel",
    "reverse_step",
    "sampler_from_dict",
]
