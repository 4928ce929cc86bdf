"""Training: lesion-focused (or global) diffusion training with EMA, accumulation, AMP and resume;
DiffMask training on real lesion masks."""

from .diffmask import DiffMaskTrainConfig, train_diffmask
from .run import train_on_folder
from .trainer import TrainConfig, train
from .volume_run import train_lesion_ddpm

__all__ = ["DiffMaskTrainConfig", "TrainConfig", "train", "train_diffmask", "train_lesion_ddpm", "train_on_folder"]
