"""Training loop for LeFusion models (and the Cond-Diffusion baseline, `TrainConfig.method`).

Every random draw of step s comes from a generator seeded by (seed, s, micro-batch), so a run that
is killed and resumed from its last saved state reproduces the uninterrupted run exactly; no RNG
state needs saving. The saved state holds weights, EMA weights, optimizer and step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from ..checkpoints.format import save_checkpoint
from ..config import ModelConfig
from ..data.dataset import LesionRoiDataset, random_flip
from ..device import resolve_device
from ..diffusion import conditional
from ..diffusion.channels import mask_channels
from ..diffusion.losses import diffusion_loss
from ..errors import LeFusionError
from .session import open_run, step_generator

CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow the public release where it states them (lr 1e-4,
    EMA 0.995 updated every 10 steps, L1 loss, gradient accumulation 2) except `ema_start`
    (the release starts EMA at step 2000; short runs need it earlier).

    method: "lefusion" (the lesion-focused model; with loss "global" the RePaint baseline) or
    "cond-diffusion" (the conditional-DDPM baseline, `lefusion.diffusion.conditional`: masks and
    masked image as input channels, global loss by definition)."""

    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 2
    lr: float = 1e-4
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 0
    save_every: int = 250
    seed: int = 0
    loss: Literal["lesion", "global"] = "lesion"
    loss_type: Literal["l1", "l2"] = "l1"
    amp: bool = False  # bfloat16 autocast on CUDA
    max_grad_norm: float | None = 1.0
    device: str = "auto"
    method: Literal["lefusion", "cond-diffusion"] = "lefusion"

    def __post_init__(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise LeFusionError(f"unknown training method {self.method!r}; use one of {', '.join(TRAIN_METHODS)}")
        if self.loss not in ("lesion", "global"):
            raise LeFusionError(f"unknown loss {self.loss!r}; use 'lesion' or 'global'")
        if self.loss_type not in ("l1", "l2"):
            raise LeFusionError(f"unknown loss type {self.loss_type!r}; use 'l1' or 'l2'")
        if self.method == "cond-diffusion" and self.loss != "global":
            raise LeFusionError(
                "--method cond-diffusion is trained with the global loss over the whole ROI (that is the baseline); "
                "drop --loss lesion or use --loss global"
            )


# Training methods -> the kind of model they make (`ModelConfig.kind`).
TRAIN_METHODS = ("lefusion", "cond-diffusion")


def _batch(dataset: LesionRoiDataset, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Sample `size` items with replacement and flip each with p = 0.5 (the release's augmentation)."""
    index = torch.randint(len(dataset), (size,), generator=gen).tolist()
    items = [dataset[i] for i in index]
    batch = {key: torch.stack([item[key] for item in items]) for key in ("x", "masks", "label", "hist")}
    return random_flip(batch, gen)


def train(
    dataset: LesionRoiDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    progress: bool = True,
) -> Path:
    """Train (or resume) a model on `dataset`; returns the folder of the exported EMA checkpoint.

    run_dir receives train_state.pt (resumable state, saved every `save_every` steps and at the
    end), log.csv (step, loss, seconds) and checkpoint/ (EMA weights + config with presets).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = train_config
    if model_config.denoiser.channels != len(dataset.lesion_labels):
        raise LeFusionError(
            f"the model has {model_config.denoiser.channels} channel(s) but the data has "
            f"{len(dataset.lesion_labels)} lesion class(es) {dataset.lesion_labels}"
        )
    if model_config.kind != cfg.method:
        raise LeFusionError(f"--method {cfg.method} trains {cfg.method} models, but the model config is a {model_config.kind} model")
    cond_diffusion = model_config.kind == "cond-diffusion"
    device = resolve_device(cfg.device)
    run = open_run(run_dir, model_config, cfg.lr, cfg.seed, device)
    model, ema, schedule, start = run.model, run.ema, run.schedule, run.start

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not progress, unit="step")
    t0 = time.perf_counter()
    for step in bar:
        total = 0.0
        for micro in range(cfg.grad_accum):
            gen = step_generator(cfg.seed, step, micro)
            batch = {k: v.to(device) for k, v in _batch(dataset, cfg.batch_size, gen).items()}
            t = torch.randint(schedule.num_timesteps, (cfg.batch_size,), generator=gen).to(device)
            noise = torch.randn(batch["x"].shape, generator=gen).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
                if cond_diffusion:
                    loss = conditional.cond_diffusion_loss(
                        model, schedule, batch["x"], batch["masks"], t, noise, batch["hist"], cfg.loss_type
                    )
                else:
                    masks = batch["masks"] if cfg.loss == "lesion" else None
                    context = mask_channels(batch["masks"]) if model_config.mask_input else None
                    loss = diffusion_loss(model, schedule, batch["x"], t, noise, batch["hist"], masks, cfg.loss_type, context)
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        run.finish_step(
            step,
            total,
            steps=cfg.steps,
            save_every=cfg.save_every,
            max_grad_norm=cfg.max_grad_norm,
            ema_every=cfg.ema_every,
            ema_start=cfg.ema_start,
            ema_decay=cfg.ema_decay,
            seconds=time.perf_counter() - t0,
        )
        bar.set_postfix(loss=f"{total:.4f}")
    final = dataclasses.replace(model_config, loss=cfg.loss)
    extra = {"train": dataclasses.asdict(cfg), "steps_done": cfg.steps}
    if cond_diffusion:  # describes the inputs for a reader of the file (the kind is in the config)
        extra[conditional.EXTRA_KEY] = conditional.checkpoint_record(len(dataset.lesion_labels))
    return save_checkpoint(run_dir / CHECKPOINT_DIR, final, ema.state_dict(), extra)
