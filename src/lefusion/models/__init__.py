"""Denoising networks. `Denoiser` is the 3D U-Net noise predictor of LeFusion."""

from .denoiser import Denoiser

__all__ = ["Denoiser"]
