"""Generation: background-preserving lesion synthesis over datasets and single volumes."""

from .pipeline import GenerateConfig, generate_dataset

__all__ = ["GenerateConfig", "generate_dataset"]
