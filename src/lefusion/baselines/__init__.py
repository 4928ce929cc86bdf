"""Non-learned lesion-synthesis baselines, as pure functions on an ROI (`types.Baseline`).

- Copy-Paste (`copy_paste`): a real lesion's texture pasted into the target mask of another scan.
- Hand-Crafted texture (`handcrafted_texture`): smoothed Gaussian noise at a chosen mean and std.

Both work on the ROI in the model's [-1, 1] units and change only mask voxels. As `lefusion
generate` methods they are built by `lefusion.generation.baseline_methods.make_baseline`; the
Cond-Diffusion baseline is a diffusion method (`lefusion.generation.diffusion_methods`).
"""

from .copy_paste import DonorLesion, copy_paste, paste_values
from .handcrafted_texture import handcrafted_texture, histogram_moments
from .types import Baseline, BaselineOutput

__all__ = ["Baseline", "BaselineOutput", "DonorLesion", "copy_paste", "handcrafted_texture", "histogram_moments", "paste_values"]
