"""Training loop for LeFusion models, the Cond-Diffusion baseline and Lesion-DDPM (`TrainConfig.method`).

Every random draw of step s comes from a generator seeded by (seed, s, micro-batch), so a run that
is killed and resumed from its last saved state reproduces the uninterrupted run exactly; no RNG
state needs saving. The saved state holds weights, EMA weights, optimizer and step.

Under torchrun the same loop runs data-parallel (:mod:`lefusion.training.distributed`):
`batch_size` is the global batch, each rank builds its slice of it (:mod:`.batches`), and the
weights follow the one-process run's to float-reduction order.
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
from ..data.dataset import LesionRoiDataset
from ..data.volume_dataset import WholeVolumeDataset
from ..diffusion import conditional, lesion_ddpm
from ..diffusion.channels import mask_channels
from ..diffusion.losses import diffusion_loss
from ..diffusion.schedule import NoiseSchedule
from ..errors import LeFusionError
from .batches import LesionBatchDraw, MicroBatches, VolumeBatchDraw, micro_batches
from .distributed import Distributed, distributed
from .session import open_run

CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow the public release where it states them (lr 1e-4,
    EMA 0.995 updated every 10 steps, L1 loss, gradient accumulation 2) except `ema_start`
    (the release starts EMA at step 2000; short runs need it earlier).

    method: "lefusion" (the lesion-focused model; with loss "global" the RePaint baseline) or
    "cond-diffusion" (the conditional-DDPM baseline, `lefusion.diffusion.conditional`: masks and
    masked image as input channels, global loss by definition) or "lesion-ddpm" (whole volumes
    from anatomy + lesion masks, `lefusion.diffusion.lesion_ddpm`: lesion-weighted L1, its lambda
    in the model config's `volume.lesion_weight`; `loss` does not apply)."""

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
    method: Literal["lefusion", "cond-diffusion", "lesion-ddpm"] = "lefusion"
    workers: int = 0  # DataLoader processes building batches ahead; the batches are the same for any number

    def __post_init__(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise LeFusionError(f"unknown training method {self.method!r}; use one of {', '.join(TRAIN_METHODS)}")
        if self.loss not in ("lesion", "global"):
            raise LeFusionError(f"unknown loss {self.loss!r}; use 'lesion' or 'global'")
        if self.loss_type not in ("l1", "l2"):
            raise LeFusionError(f"unknown loss type {self.loss_type!r}; use 'l1' or 'l2'")
        if self.workers < 0:
            raise LeFusionError(f"workers must be >= 0, got {self.workers}")
        if self.method == "cond-diffusion" and self.loss != "global":
            raise LeFusionError(
                "--method cond-diffusion is trained with the global loss over the whole ROI (that is the baseline); "
                "drop --loss lesion or use --loss global"
            )


# Training methods -> the kind of model they make (`ModelConfig.kind`).
TRAIN_METHODS = ("lefusion", "cond-diffusion", "lesion-ddpm")


def train(
    dataset: LesionRoiDataset | WholeVolumeDataset,
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
    cfg = train_config
    if model_config.denoiser.channels != len(dataset.lesion_labels):
        raise LeFusionError(
            f"the model has {model_config.denoiser.channels} channel(s) but the data has "
            f"{len(dataset.lesion_labels)} lesion class(es) {dataset.lesion_labels}"
        )
    if model_config.kind != cfg.method:
        raise LeFusionError(f"--method {cfg.method} trains {cfg.method} models, but the model config is a {model_config.kind} model")
    with distributed(cfg.device) as ddp:
        # in a function of its own, so that its DDP wrapper is freed before the process group is
        checkpoint = _train_steps(ddp, dataset, model_config, cfg, run_dir, progress)
    return checkpoint


def _train_steps(
    ddp: Distributed,
    dataset: LesionRoiDataset | WholeVolumeDataset,
    model_config: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    progress: bool,
) -> Path:
    cond_diffusion = model_config.kind == "cond-diffusion"
    ddp.check_batch(cfg.batch_size)
    device = ddp.device
    run = open_run(run_dir, model_config, cfg.lr, cfg.seed, device, writes=ddp.is_main)
    model, schedule, start = run.model, run.schedule, run.start
    # the learned null condition gets no gradient while every batch carries its histogram
    network = ddp.wrap(model, find_unused_parameters=(model_config.denoiser.cond_dim or 0) > 0)
    draw_type = VolumeBatchDraw if model_config.kind == "lesion-ddpm" else LesionBatchDraw
    draw = draw_type(dataset, cfg.batch_size, schedule.num_timesteps, ddp.part(cfg.batch_size))
    batches = micro_batches(MicroBatches(draw, cfg.seed, cfg.grad_accum), start, cfg.steps, cfg.workers, device.type == "cuda")
    weight = ddp.loss_weight(cfg.batch_size)  # 1.0 for one process: its losses are as before

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not (progress and ddp.is_main), unit="step")
    t0 = time.perf_counter()
    for step in bar:
        total = 0.0
        for micro in range(cfg.grad_accum):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            with ddp.sync_gradients(network, sync=micro == cfg.grad_accum - 1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
                    loss = _loss(network, schedule, batch, model_config, cfg)
                (loss * weight / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        total = ddp.batch_mean(total, cfg.batch_size)
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
    checkpoint = run_dir / CHECKPOINT_DIR
    if ddp.is_main:
        final = dataclasses.replace(model_config, loss=cfg.loss)
        extra = {"train": dataclasses.asdict(cfg), "steps_done": cfg.steps}
        if cond_diffusion:  # describes the inputs for a reader of the file (the kind is in the config)
            extra[conditional.EXTRA_KEY] = conditional.checkpoint_record(len(dataset.lesion_labels))
        if model_config.kind == "lesion-ddpm":
            extra[lesion_ddpm.EXTRA_KEY] = lesion_ddpm.checkpoint_record(condition_names(model_config))
        save_checkpoint(checkpoint, final, run.ema.state_dict(), extra)
    ddp.barrier()  # every rank returns once the checkpoint is complete
    return checkpoint


def condition_names(model_config: ModelConfig) -> list[str]:
    """Names of a lesion-ddpm model's condition channels, in order."""
    labels = model_config.volume.anatomy_labels
    return [*(f"anatomy label {a}" for a in labels), *([] if labels else ["brain mask"]), "lesion mask"]


def _loss(
    network: torch.nn.Module, schedule: NoiseSchedule, batch: dict[str, torch.Tensor], model_config: ModelConfig, cfg: TrainConfig
) -> torch.Tensor:
    """The batch-mean training loss of one micro-batch (see `distributed` for why a mean)."""
    if model_config.kind == "lesion-ddpm":
        x, cond, lesion, t, noise = batch["x"], batch["cond"], batch["lesion"], batch["t"], batch["noise"]
        return lesion_ddpm.lesion_ddpm_loss(network, schedule, x, cond, lesion, t, noise, model_config.volume.lesion_weight)
    x, masks, t, noise, hist = batch["x"], batch["masks"], batch["t"], batch["noise"], batch["hist"]
    if model_config.kind == "cond-diffusion":
        return conditional.cond_diffusion_loss(network, schedule, x, masks, t, noise, hist, cfg.loss_type)
    context = mask_channels(masks) if model_config.mask_input else None
    return diffusion_loss(network, schedule, x, t, noise, hist, masks if cfg.loss == "lesion" else None, cfg.loss_type, context)
