"""`LeFusionModel`: a loaded model (network + schedule + conventions) that the rest builds on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .diffusion.schedule import NoiseSchedule
from .models import Denoiser


@dataclass
class LeFusionModel:
    """A trained LeFusion model.

    `denoiser` is the network as an nn.Module, forward(x (B, C, D, H, W), t (B,), cond) -> noise;
    `schedule` holds the diffusion tables; `config` records architecture, preprocessing, lesion
    labels and histogram presets; `weights_sha256` identifies the weights in output manifests.
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
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device: str | torch.device) -> "LeFusionModel":
        self.denoiser.to(device)
        self.schedule.to(device)
        return self

    def eval(self) -> "LeFusionModel":
        self.denoiser.eval()
        return self

    def with_presets(self, presets: list[tuple[float, ...]]) -> "LeFusionModel":
        """A copy of this model whose config carries the given histogram presets."""
        config = dataclasses.replace(self.config, hist_presets=tuple(presets))
        return dataclasses.replace(self, config=config)

    def save(self, directory: str | Path) -> Path:
        """Write this model in lefusion format (safetensors + config.json)."""
        from .checkpoints.format import save_checkpoint

        return save_checkpoint(directory, self.config, self.denoiser.state_dict(), self.extra or None)

    def inpaint(self, image, mask, preset: int | str = "mix", seed: int = 0, jump_length: int = 10, jump_n_sample: int = 10):
        """Generate lesions inside `mask` of one (D, H, W) volume; background kept exactly.

        See `lefusion.generation.inpaint.inpaint_volume`. `preset` is 1-based, 'mix', or a JSON file.
        """
        from .generation.inpaint import inpaint_volume

        return inpaint_volume(self, image, mask, preset, seed, jump_length, jump_n_sample)
