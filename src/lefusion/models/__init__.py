"""Denoising networks. `Denoiser` is the 3D U-Net noise predictor of LeFusion; it knows nothing
about diffusion (a trained model with its schedule is `lefusion.diffusion.model.DiffusionModel`)."""

from .denoiser import Denoiser, compile_denoiser

__all__ = ["Denoiser", "compile_denoiser"]
