"""Train Lesion-DDPM on a whole-scan dataset folder: preprocess every scan to the model grid, record
the mapping back to source units, run the shared trainer (EMA, resume, grad accumulation, DDP)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import DenoiserConfig, ModelConfig, PreprocessConfig, ScheduleConfig, VolumeConfig
from ..data.volume_dataset import load_volume_dataset
from ..errors import LeFusionError
from ..io import atomic_write_text
from .distributed import distributed
from .run import RUN_CONFIG
from .trainer import TrainConfig, train

# Defaults for a whole-volume CPU model (48 x 56 x 48 grid): 16 / 32 / 64 channels, 3 levels.
VOLUME_DENOISER = DenoiserConfig(dim=16, dim_mults=(1, 2, 4), channels=1, cond_dim=None, attn_heads=4, attn_dim_head=16)


def lesion_ddpm_config(
    volume: VolumeConfig, denoiser: DenoiserConfig | None = None, schedule: ScheduleConfig | None = None, source: str = ""
) -> ModelConfig:
    """The ModelConfig of a Lesion-DDPM model: one output channel, the condition as extra inputs."""
    denoiser = dataclasses.replace(denoiser or VOLUME_DENOISER, channels=1, cond_dim=None, extra_in_channels=volume.condition_channels)
    factor = 2 ** (len(denoiser.dim_mults) - 1)
    if any(s % factor for s in volume.volume_shape):
        raise LeFusionError(
            f"--volume-shape {' '.join(map(str, volume.volume_shape))} must be divisible by {factor} "
            f"in every axis ({len(denoiser.dim_mults)} U-Net levels from --dim-mults)"
        )
    return ModelConfig(
        denoiser=denoiser,
        schedule=schedule or ScheduleConfig(),
        # the ROI conventions do not apply (`volume` holds the real ones); recorded as MRI on the model grid
        preprocess=PreprocessConfig(modality="mri", roi_shape=volume.volume_shape),
        lesion_labels=(1,),
        loss="global",  # the whole volume is scored (weighted by the lesion): not LeFusion's lesion-only loss
        source=source,
        kind="lesion-ddpm",
        volume=volume,
    )


def train_lesion_ddpm(
    data_root: str | Path,
    run_dir: str | Path,
    train_config: TrainConfig,
    volume: VolumeConfig,
    denoiser: DenoiserConfig | None = None,
    schedule: ScheduleConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a Lesion-DDPM model on `data_root` (images/, masks/, optional organs/;
    `lefusion.data.volumes`); returns the exported checkpoint folder. `volume.reference` and
    `volume.background` are replaced by the training scans' medians. A run folder started with other
    settings is refused."""
    data_root, run_dir = Path(data_root), Path(run_dir)
    if train_config.method != "lesion-ddpm":
        raise LeFusionError(f"train_lesion_ddpm trains lesion-ddpm models, not --method {train_config.method}")
    if volume.anatomy_labels and not (data_root / "organs").is_dir():
        raise LeFusionError(
            f"{data_root}: no organs/ folder for the anatomy labels {volume.anatomy_labels}; "
            "give --anatomy-labels with no value to condition on the brain mask (image > 0) instead"
        )
    dataset = load_volume_dataset(data_root, volume)
    reference, background = dataset.reference()
    volume = dataclasses.replace(volume, reference=reference, background=background)
    config = lesion_ddpm_config(volume, denoiser, schedule, source=f"Lesion-DDPM trained on {data_root}")
    train_config = dataclasses.replace(train_config, loss="global")
    record = json.loads(json.dumps({"model": config.to_dict(), "train": dataclasses.asdict(train_config), "n_cases": len(dataset)}))
    record_path = run_dir / RUN_CONFIG
    if record_path.is_file():
        previous = json.loads(record_path.read_text())
        ignore = ("steps", "save_every", "device", "workers")
        same = previous.get("model") == record["model"] and all(
            previous.get("train", {}).get(k) == v for k, v in record["train"].items() if k not in ignore
        )
        if not same:
            raise LeFusionError(f"{record_path}: this run folder was started with other settings or data; use a new --out folder")
    with distributed(train_config.device) as ddp:
        ddp.barrier()
        if ddp.is_main:
            atomic_write_text(record_path, json.dumps(record, indent=2))
            if progress:
                print(
                    f"training Lesion-DDPM on {len(dataset)} scans from {data_root}, grid {'x'.join(map(str, volume.volume_shape))}, "
                    f"lesion weight {volume.lesion_weight}; run folder {run_dir}"
                )
        return train(dataset, config, train_config, run_dir, progress=progress)
