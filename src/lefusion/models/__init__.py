"""Denoising networks. `Denoiser` is the 3D U-Net noise predictor of LeFusion; `VolumeUNet` the
whole-volume conditional U-Net of Lesion-DDPM. They know nothing about diffusion (a trained model
with its schedule is `lefusion.diffusion.model.DiffusionModel`)."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .denoiser import Denoiser, compile_denoiser
from .volume_unet import VolumeUNet


def build_network(config: ModelConfig) -> nn.Module:
    """The network a model of `config.kind` runs: VolumeUNet for lesion-ddpm, else the Denoiser."""
    if config.kind == "lesion-ddpm":
        return VolumeUNet(config.denoiser)
    return Denoiser(config.denoiser)


__all__ = ["Denoiser", "VolumeUNet", "build_network", "compile_denoiser"]
