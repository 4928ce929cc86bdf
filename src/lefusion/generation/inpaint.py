"""The Python API: `lefusion.load(checkpoint)` -> a `LeFusionModel`, whose `inpaint` generates
lesions into one volume exactly as `lefusion generate` does for the same case, seed and sampler.

    model = lefusion.load("models/lidc")
    new = model.inpaint("ct.nii.gz", "mask.nii.gz", preset=2, seed=0)   # same voxels as generate --seed 0
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..checkpoints.loading import load_model, save_model
from ..data.layouts import Case
from ..data.roi import prepare_roi, validate_pair
from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import SamplerConfig
from ..errors import LeFusionError
from ..io import Volume, read_volume, strip_volume_suffix
from .diffusion_methods import LeFusionGenerator
from .pipeline import restored_volume
from .types import GenerateConfig, Job, output_seed


def _as_volume(value: Volume | np.ndarray | str | Path, geometry_of: Volume | None = None) -> Volume:
    if isinstance(value, Volume):
        return value
    if isinstance(value, (str, Path)):
        return read_volume(value)
    return Volume(np.asarray(value), geometry_of.geometry) if geometry_of is not None else Volume(np.asarray(value))


def inpaint_volume(
    model: DiffusionModel,
    image: Volume | np.ndarray | str | Path,
    mask: Volume | np.ndarray | str | Path,
    preset: int | str = "mix",
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Generate lesions inside `mask` of one volume; return the new volume in the image's units and dtype.

    image, mask: (D, H, W) arrays, Volumes or file paths on the same grid, in disk axis order; the
    mask holds the model's lesion label ids (and may hold its context labels). Outside the lesion
    the result equals `image` exactly. sampler: None = the published time travel (as `generate`).
    name: the case name the output's seed derives from (`output_seed(seed, name, preset)`), as in
    `lefusion generate`: by default the image file's name without its suffix, or "" for an array;
    so a file gives the voxels `lefusion generate --seed SEED` writes for it (with --batch-size 1;
    batched convolutions may round differently in the last bits). Runs on the model's device.
    """
    case_name = name if name is not None else (strip_volume_suffix(Path(image).name) if isinstance(image, (str, Path)) else "")
    image_vol = _as_volume(image)
    mask_vol = _as_volume(mask, image_vol)
    method = LeFusionGenerator(model, GenerateConfig(sampler=sampler, device=str(model.device)))
    conv = method.conventions
    image_name = str(image) if isinstance(image, (str, Path)) else "image"
    mask_name = str(mask) if isinstance(mask, (str, Path)) else "mask"
    validate_pair(image_vol, mask_vol, conv.lesion_labels, conv.allowed_labels, image_name, mask_name, require_lesion=True)
    roi = prepare_roi(image_vol, mask_vol, conv.preprocess, image_path=image_name, label_path=mask_name)
    if not torch.isin(roi.label, torch.tensor(conv.lesion_labels)).any():
        raise LeFusionError(f"{mask_name}: the lesion lies outside the centred {conv.preprocess.roi_shape} ROI")
    spec = str(preset)
    job = Job(Case(case_name, Path(image_name), None), spec, case_name, output_seed(seed, case_name, spec))
    (result,) = method([job], [roi], lambda: None)
    return restored_volume(method, roi, result, image_vol, mask_vol, image_name)


class LeFusionModel(DiffusionModel):
    """A loaded model with the single-volume API (`inpaint`); what `lefusion.load` returns."""

    def inpaint(
        self,
        image: Volume | np.ndarray | str | Path,
        mask: Volume | np.ndarray | str | Path,
        preset: int | str = "mix",
        seed: int = 0,
        sampler: SamplerConfig | None = None,
        name: str | None = None,
    ) -> np.ndarray:
        """See :func:`inpaint_volume`. `preset` is 1-based, 'mix', or a histogram JSON file."""
        return inpaint_volume(self, image, mask, preset, seed, sampler, name)

    def save(self, directory: str | Path) -> Path:
        """Write this model in lefusion format (safetensors + config.json); returns the folder."""
        return save_model(self, directory)


def load(path: str | Path, weights: Literal["ema", "model"] = "ema", device: str | torch.device = "cpu") -> LeFusionModel:
    """Load a lefusion checkpoint folder, a published `.pt` file or a bundled model by name
    (`lefusion.checkpoints.load_model`), with the single-volume API."""
    model = load_model(path, weights=weights, device=device)
    return LeFusionModel(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)})
