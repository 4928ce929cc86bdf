"""Generation: lesions into scans with a method (`methods`), over datasets (`pipeline`) and single
volumes (`inpaint`, the Python API); whole volumes from masks (`whole_volume`, Lesion-DDPM)."""

from .methods import METHODS, MethodRequest, build_method
from .pipeline import generate_dataset
from .types import GenerateConfig
from .whole_volume import generate_volumes

__all__ = ["METHODS", "GenerateConfig", "MethodRequest", "build_method", "generate_dataset", "generate_volumes"]
