"""Generation: lesions into scans with a method (`methods`), over datasets (`pipeline`) and single
volumes (`inpaint`, the Python API)."""

from .methods import METHODS, MethodRequest, build_method
from .pipeline import generate_dataset
from .types import GenerateConfig

__all__ = ["METHODS", "GenerateConfig", "MethodRequest", "build_method", "generate_dataset"]
