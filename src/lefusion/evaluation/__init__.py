"""Evaluation: texture control, image quality, downstream segmentation."""
