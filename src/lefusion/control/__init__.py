"""Texture control: histogram presets, their perturbation and mixing."""
