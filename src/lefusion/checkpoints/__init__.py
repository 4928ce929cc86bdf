"""Checkpoints: our safetensors + JSON format, and safe import of published LeFusion `.pt` files."""

from .format import read_checkpoint, save_checkpoint
from .loading import load_model

__all__ = ["load_model", "read_checkpoint", "save_checkpoint"]
