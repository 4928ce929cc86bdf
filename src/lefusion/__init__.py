"""lefusion: controllable pathology synthesis with lesion-focused diffusion (LeFusion, ICLR 2025).

import lefusion
model = lefusion.load("lidc.pt")          # a published checkpoint, a lefusion folder, a bundled name
eps = model.denoiser(x, t, cond)          # x: (B, C, D, H, W)
new = model.inpaint(image, mask, preset=2, seed=0)
"""

from .errors import LeFusionError
from .generation.inpaint import LeFusionModel, load

__version__ = "0.1.0"
__all__ = ["LeFusionError", "LeFusionModel", "__version__", "load"]
