"""`DiffusionModel`: a trained network with its noise schedule and configuration, as loaded from a
checkpoint. Everything that samples or evaluates a model takes one of these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..models import Denoiser
from .schedule import NoiseSchedule


@dataclass
class DiffusionModel:
    """A trained model: `config.kind` says which (LeFusion, Cond-Diffusion, DiffMask).

    `denoiser` is the network as an nn.Module, forward(x (B, C, D, H, W), t (B,), cond) -> its
    prediction (`config.prediction`); `schedule` holds the diffusion tables; `config` records
    architecture, preprocessing, lesion labels and histogram presets; `weights_sha256` identifies
    the weights in output manifests; `extra` holds method metadata (DiffMask's control region, the
    training settings, ...).
    """

    config: ModelConfig
    denoiser: Denoiser
    schedule: NoiseSchedule = field(default=None)  # type: ignore[assignment]
    source: Path | None = None
    weights_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schedule is None:
            self.schedule = NoiseSchedule(self.config.schedule)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device: str | torch.device) -> DiffusionModel:
        self.denoiser.to(device)
        self.schedule.to(device)
        return self

    def eval(self) -> DiffusionModel:
        self.denoiser.eval()
        return self

    def with_spacing(self, spacing: tuple[float, float, float] | None) -> DiffusionModel:
        """A copy of this model whose preprocessing records another training spacing (mm, model order)."""
        preprocess = dataclasses.replace(self.config.preprocess, spacing=spacing)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, preprocess=preprocess))

    def with_presets(self, presets: list[tuple[float, ...]]) -> DiffusionModel:
        """A copy of this model whose config carries the given histogram presets."""
        config = dataclasses.replace(self.config, hist_presets=tuple(presets))
        return dataclasses.replace(self, config=config)
