"""One entry point for both checkpoint formats: `load_model(path)` -> DiffusionModel."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from ..config import EMIDEC_PREPROCESS, LIDC_PREPROCESS, DenoiserConfig, ModelConfig, ScheduleConfig, legacy_kind
from ..diffusion.model import DiffusionModel
from ..errors import LeFusionError
from ..models import build_network
from .format import WEIGHTS_NAME, file_sha256, is_checkpoint_dir, read_checkpoint, save_checkpoint
from .legacy import infer_denoiser_config, infer_schedule_config, read_published, split_state


def load_weights(denoiser: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; on mismatch name the first offending keys and shapes."""
    expected = denoiser.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    if wrong:
        problems.append(f"shape mismatch {wrong[:3]}{' ...' if len(wrong) > 3 else ''}")
    if problems:
        raise LeFusionError(f"{source}: weights do not fit the architecture in its config: " + "; ".join(problems))
    denoiser.load_state_dict(weights)


# The release resampled LIDC nodule ROIs to 1 mm isotropic; EMIDEC ROIs keep each scan's own grid.
PUBLISHED_LIDC_SPACING = (1.0, 1.0, 1.0)


def legacy_model_config(denoiser_cfg: DenoiserConfig, schedule_cfg: ScheduleConfig, source: str) -> ModelConfig:
    """Kind and data conventions of a published model, read once off its channel layout."""
    kind = legacy_kind(denoiser_cfg, False, {})
    if kind == "diffmask":  # mask + control sphere in, mask out
        labels, preprocess = (1,), LIDC_PREPROCESS
    elif denoiser_cfg.channels == 2:  # EMIDEC: MI, PMO; the release fed (k, i, j) tensors
        labels, preprocess = (3, 4), dataclasses.replace(EMIDEC_PREPROCESS, axes=(0, 2, 1))
    elif denoiser_cfg.channels == 1:  # LIDC nodules at 1 mm; the release fed (i, j, k) tensors
        labels, preprocess = (1,), dataclasses.replace(LIDC_PREPROCESS, axes=(2, 1, 0), spacing=PUBLISHED_LIDC_SPACING)
    else:  # not a published layout; read as a K-class CT model with labels 1..K
        labels, preprocess = tuple(range(1, denoiser_cfg.channels + 1)), LIDC_PREPROCESS
    context = (1, 2) if labels == (3, 4) else ()
    return ModelConfig(
        denoiser=denoiser_cfg,
        schedule=schedule_cfg,
        preprocess=preprocess,
        lesion_labels=labels,
        context_labels=context,
        source=source,
        kind=kind,
        loss="global" if kind == "diffmask" else "lesion",
    )


# The lung demo model with its two diffusion baselines (the CPU benchmark), DiffMask, and the brain
# demo with its baselines and the Lesion-DDPM model (the brain benchmark).
BUNDLED_MODELS = (
    "demo_lung",
    "demo_lung_repaint",
    "demo_lung_cond_diffusion",
    "diffmask_lidc",
    "demo_brain",
    "demo_brain_repaint",
    "demo_brain_cond_diffusion",
    "demo_brain_lesion_ddpm",
)


def bundled_model_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (src/lefusion/assets/NAME)."""
    from importlib import resources

    return Path(str(resources.files("lefusion") / "assets" / name))


def load_model(path: str | Path, weights: Literal["ema", "model"] = "ema", device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a lefusion checkpoint folder (or its model.safetensors / config.json), a published
    `.pt` file (`weights` picks its EMA or raw weights) or a bundled model by name (BUNDLED_MODELS,
    e.g. "demo_lung", when no such path exists). The model is returned in eval mode."""
    path = Path(path)
    if not path.exists() and str(path) in BUNDLED_MODELS:
        path = bundled_model_dir(str(path))
    if path.is_file() and path.name in (WEIGHTS_NAME, "config.json"):
        path = path.parent
    if is_checkpoint_dir(path):
        config, state, extra = read_checkpoint(path)
        digest = file_sha256(path / WEIGHTS_NAME)
    elif path.is_dir():
        raise LeFusionError(f"{path}: folder has no config.json; not a lefusion checkpoint")
    else:
        state_all = read_published(path, weights)
        state, schedule_state = split_state(state_all, str(path))
        denoiser_cfg = infer_denoiser_config(state, str(path))
        try:
            config = legacy_model_config(denoiser_cfg, infer_schedule_config(schedule_state, str(path)), f"{path.name}:{weights}")
        except ValueError as exc:
            raise LeFusionError(f"{path}: not a model layout of the public release ({exc})") from exc
        extra = {}
        digest = file_sha256(path)
    denoiser = build_network(config)
    load_weights(denoiser, state, str(path))
    return DiffusionModel(config=config, denoiser=denoiser, source=path, weights_sha256=digest, extra=extra).to(device).eval()


def save_model(model: DiffusionModel, directory: str | Path) -> Path:
    """Write a model in lefusion format (safetensors + config.json); returns the folder."""
    return save_checkpoint(directory, model.config, model.denoiser.state_dict(), model.extra or None)
