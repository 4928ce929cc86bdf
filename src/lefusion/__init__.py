"""lefusion: controllable pathology synthesis with lesion-focused diffusion (LeFusion, ICLR 2025).

    import lefusion
    model = lefusion.load("lidc.pt")          # a published checkpoint, or a lefusion folder
    eps = model.denoiser(x, t, cond)          # x: (B, C, D, H, W)
"""

from .checkpoints import load_model as load
from .errors import LeFusionError
from .model import LeFusionModel

__version__ = "0.1.0"
__all__ = ["load", "LeFusionError", "LeFusionModel", "__version__"]
