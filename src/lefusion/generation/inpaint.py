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
from ..data.roi import validate_pair
from ..diffusion.model import DiffusionModel
from ..diffusion.sampling import SamplerConfig
from ..io import Geometry, Volume, read_volume, strip_volume_suffix
from .cases import plan_volumes
from .diffusion_methods import LeFusionGenerator
from .types import GenerateConfig, Job, output_seed
from .work import generate_works, start_work


def _as_volume(value: Volume | np.ndarray | str | Path, geometry: Geometry) -> Volume:
    if isinstance(value, Volume):
        return value
    if isinstance(value, (str, Path)):
        return read_volume(value)
    return Volume(np.asarray(value), geometry)


def _model_grid(model: DiffusionModel) -> Geometry:
    """The geometry a bare array is read with: the model's own spacing (an array carries none)."""
    preprocess = model.config.preprocess
    if preprocess.spacing is None:
        return Geometry()
    spacing = [0.0] * 3
    for i, a in enumerate(preprocess.axes):
        spacing[a] = preprocess.spacing[i]
    return Geometry(spacing=tuple(spacing))


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

    image, mask: (D, H, W) arrays, Volumes or file paths on the same grid, in disk axis order (an
    ROI or a whole scan: one box per lesion at the model's spacing, as `lefusion generate`; a bare
    array carries no geometry and is read as lying on the model's own grid); the
    mask holds the model's lesion label ids (and may hold its context labels). Outside the lesions
    the result equals `image` exactly. sampler: None = the published time travel (as `generate`).
    name: the case name the output's seed derives from (`output_seed(seed, name, preset)`), as in
    `lefusion generate`: by default the image file's name without its suffix, or "" for an array;
    so a file gives the voxels `lefusion generate --seed SEED` writes for it. Runs on the model's device.
    """
    image_name = str(image) if isinstance(image, (str, Path)) else "image"
    mask_name = str(mask) if isinstance(mask, (str, Path)) else "mask"
    case_name = name if name is not None else (strip_volume_suffix(Path(image_name).name) if isinstance(image, (str, Path)) else "")
    image_vol = _as_volume(image, _model_grid(model))
    mask_vol = _as_volume(mask, image_vol.geometry)
    method = LeFusionGenerator(model, GenerateConfig(sampler=sampler, device=str(model.device)))
    conv = method.conventions
    validate_pair(image_vol, mask_vol, conv.lesion_labels, conv.allowed_labels, image_name, mask_name, require_lesion=True)
    case = Case(case_name, Path(image_name), Path(mask_name))
    spec = str(preset)
    job = Job(case, spec, case_name, output_seed(seed, case_name, spec))
    work = start_work(job, plan_volumes(case, image_vol, mask_vol, method), image_vol, mask_vol, method, method.config)
    generate_works([work], method, 1, lambda: None)
    return work.array


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
