"""Single-volume generation for the Python API: `lefusion.load(ckpt).inpaint(image, mask, preset=2, seed=0)`."""

from __future__ import annotations

import numpy as np
import torch

from ..control.conditions import choose_condition
from ..diffusion.conditional import METHOD as COND_DIFFUSION
from ..diffusion.conditional import is_cond_diffusion
from ..data.roi import prepare_roi, restore_roi, to_source_dtype, validate_pair
from ..diffusion.repaint import inpaint_lesions
from ..errors import LeFusionError
from ..io import Volume
from ..model import LeFusionModel


def require_lesion_model(model: LeFusionModel) -> None:
    """Raise LeFusionError unless `model` is a LeFusion lesion model (not a Cond-Diffusion
    baseline or a DiffMask, which take extra input channels and sample differently)."""
    if is_cond_diffusion(model.extra):
        raise LeFusionError(
            f"{model.source}: is a Cond-Diffusion baseline model (lesion masks + masked image as input channels), not a LeFusion "
            f"model; generate with `--method {COND_DIFFUSION}` (Python: lefusion.baselines.CondDiffusionGenerator(model))"
        )
    if model.config.denoiser.extra_in_channels and not model.config.mask_input:
        raise LeFusionError(f"{model.source}: is a mask model (DiffMask), not a lesion model; use `lefusion masks sample`")


def inpaint_volume(
    model: LeFusionModel,
    image: Volume | np.ndarray,
    mask: Volume | np.ndarray,
    preset: int | str = "mix",
    seed: int = 0,
    jump_length: int = 10,
    jump_n_sample: int = 10,
) -> np.ndarray:
    """Generate lesions inside `mask` of one volume; return the new volume in the image's units.

    image, mask: (D, H, W) arrays (or Volumes) on the same grid, in disk axis order; the mask holds
    the model's lesion label ids (and may hold its context labels). Outside the lesion the result
    equals `image` exactly. Runs on the model's device.
    """
    image = image if isinstance(image, Volume) else Volume(np.asarray(image))
    mask = mask if isinstance(mask, Volume) else Volume(np.asarray(mask), image.geometry)
    require_lesion_model(model)
    cfg = model.config
    validate_pair(image, mask, cfg.lesion_labels, cfg.allowed_labels, "image", "mask", require_lesion=True)
    roi = prepare_roi(image, mask, cfg.preprocess, image_path="image", label_path="mask")
    if not torch.isin(roi.label, torch.tensor(cfg.lesion_labels)).any():
        raise LeFusionError(f"mask: the lesion lies outside the centred {cfg.preprocess.roi_shape} ROI")
    device = model.device
    condition = choose_condition(preset, cfg.hist_presets, cfg.denoiser.cond_dim or 0, cfg.preprocess.hist_bins, torch.Generator().manual_seed(seed))
    cond = torch.tensor([condition.values], device=device) if cfg.denoiser.cond_dim else None
    result = inpaint_lesions(
        model.denoiser, model.schedule, roi.image[None].to(device), roi.label[None].to(device), cfg.lesion_labels,
        cond, torch.Generator(device=device).manual_seed(seed), jump_length, jump_n_sample, mask_input=cfg.mask_input,
    )
    return to_source_dtype(restore_roi(roi, result[0].cpu(), image), image.array)
