"""Checkpoints: our safetensors + JSON format, and safe import of published LeFusion `.pt` files."""

from .format import read_checkpoint, save_checkpoint
from .loading import BUNDLED_MODELS, bundled_model_dir, load_model, save_model

__all__ = ["BUNDLED_MODELS", "bundled_model_dir", "load_model", "read_checkpoint", "save_checkpoint", "save_model"]
