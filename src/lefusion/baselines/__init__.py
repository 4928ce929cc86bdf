"""Lesion-synthesis baselines, generated through the same `lefusion generate` interface.

- Copy-Paste (`copy_paste`): a real lesion's texture pasted into the target mask of another scan.
- Hand-Crafted texture (`handcrafted_texture`): smoothed Gaussian noise at a chosen mean and std.
- Cond-Diffusion (`CondDiffusionGenerator`): a conditional DDPM (masks + masked image as input
  channels, `lefusion train --method cond-diffusion`) that regenerates the whole ROI.

The two non-learned ones have the signature of `types.Baseline` and work on the ROI in the model's
[-1, 1] units; `make_baseline` turns either into a generation method (`generators.BaselineGenerator`).
Cond-Diffusion needs its trained checkpoint and is a generation method itself.
"""

from .cond_diffusion import CondDiffusionGenerator
from .copy_paste import DonorLesion, copy_paste, paste_values
from .generators import METHODS, BaselineGenerator, make_baseline
from .handcrafted_texture import handcrafted_texture, histogram_moments
from .types import Baseline, BaselineOutput

__all__ = [
    "METHODS",
    "Baseline",
    "BaselineGenerator",
    "BaselineOutput",
    "CondDiffusionGenerator",
    "DonorLesion",
    "copy_paste",
    "handcrafted_texture",
    "histogram_moments",
    "make_baseline",
    "paste_values",
]
