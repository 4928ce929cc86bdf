"""Training: lesion-focused (or global) diffusion training with EMA, accumulation, AMP and resume."""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
