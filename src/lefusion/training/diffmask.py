"""Training DiffMask (:mod:`lefusion.masks.diffmask`) on real lesion masks, e.g. the LIDC sets of
:func:`lefusion.masks.lidc.build_lidc_masks`.

Each step draws a batch of masks, augments each with random flips along z, y, x and a random
in-plane rotation by a multiple of 90 degrees, builds its control sphere (equivalent diameter,
centroid), noises the mask to a random step t (Ho et al. 2020, eq. 4) and regresses the clean mask
x0 (default) or the noise over the whole box (the global loss; there is no background to ignore in
a mask model). See :mod:`lefusion.masks.diffmask` for why masks are better served by x0.

A model with attributes (``config.attributes``, e.g. the four LIDC shape ratings) also gets each
mask's ratings as its condition vector, dropped for classifier-free guidance as
:mod:`lefusion.control.attributes` describes.

Like :mod:`lefusion.training.trainer`, every random draw of step s comes from a generator seeded
by (seed, s), so a run killed and resumed from its last saved state reproduces the uninterrupted
run exactly; weights, EMA weights, optimizer and step are saved atomically. Under torchrun it
trains data-parallel the same way (`batch_size` global, each rank its slice; see
:mod:`lefusion.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoints.format import save_checkpoint
from ..config import PREDICTIONS, DenoiserConfig, ModelConfig, Prediction
from ..control.attributes import DEFAULT_ATTRIBUTE_DROP, DEFAULT_COND_DROP, ENCODING, SHAPE_ATTRIBUTES, drop_conditions, encode_ratings
from ..diffusion.channels import with_context
from ..diffusion.losses import global_loss, prediction_target
from ..diffusion.process import q_sample
from ..errors import LeFusionError
from ..masks.control_region import CONDITIONING, CONTROL_KINDS, SPACING_MM, ControlKind, mask_control, mask_form, pack_forms
from ..masks.diffmask import diffmask_model_config
from ..masks.mask_sets import load_training_ratings
from .batches import MicroBatches, micro_batches
from .distributed import Distributed, distributed
from .session import open_run

CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class DiffMaskTrainConfig:
    """Optimisation and data settings of a DiffMask run.

    box: (D, H, W) centre crop of the stored masks (LIDC: 32x64x64, nodule-centred); a smaller box
    makes CPU training feasible. clipped: what to do with masks that touch the crop's border (cut
    by the crop or already by the stored box): "drop" (default) keeps the sphere <-> size mapping
    exact, "keep" trains on the cut masks. loss_type: "l2" (default) is DDPM's L_simple
    (Ho et al. 2020, eq. 14), whose minimiser is the posterior mean E[eps | x_t] that the ancestral
    step (eq. 11) assumes; "l1" (the public release) estimates the median instead. prediction:
    the network's target, "x0" (default, the clean mask), "eps" (the noise, as DDPM and the
    public release) or "v" (sqrt(abar) eps - sqrt(1 - abar) x0, Salimans & Ho 2022). control:
    the control region built from each mask, "sphere" (the paper's) or "ellipsoid" (the mask's
    volume and second-moment form; :mod:`lefusion.masks.control_region`). attributes: ratings the
    model is conditioned on (subset of ``SHAPE_ATTRIBUTES``; () = none, the unconditioned model);
    cond_drop / attribute_drop: probability that a sample's whole condition / one attribute is
    dropped to "not given" (classifier-free guidance training).
    """

    steps: int = 10000
    batch_size: int = 8
    lr: float = 2e-4
    seed: int = 0
    box: tuple[int, int, int] = (32, 32, 32)
    clipped: Literal["drop", "keep"] = "drop"
    loss_type: Literal["l1", "l2"] = "l2"
    prediction: Prediction = "x0"
    control: ControlKind = "sphere"
    attributes: tuple[str, ...] = ()
    cond_drop: float = DEFAULT_COND_DROP
    attribute_drop: float = DEFAULT_ATTRIBUTE_DROP
    ema_decay: float = 0.995
    ema_every: int = 1
    ema_start: int = 0
    save_every: int = 250
    max_grad_norm: float | None = 1.0
    device: str = "auto"
    workers: int = 0  # DataLoader processes building batches ahead; the batches are the same for any number

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", tuple(int(v) for v in self.box))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        unknown = sorted(set(self.attributes) - set(SHAPE_ATTRIBUTES))
        if unknown:
            raise ValueError(f"attributes must be among {SHAPE_ATTRIBUTES}, got {unknown}")
        if not (0.0 <= self.cond_drop < 1.0 and 0.0 <= self.attribute_drop < 1.0):
            raise ValueError(f"cond_drop and attribute_drop must be in [0, 1), got {self.cond_drop}, {self.attribute_drop}")
        if self.clipped not in ("drop", "keep"):
            raise ValueError(f"clipped must be 'drop' or 'keep', got {self.clipped!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.control not in CONTROL_KINDS:
            raise ValueError(f"control must be one of {CONTROL_KINDS}, got {self.control!r}")


def _touches_border(masks: np.ndarray) -> np.ndarray:
    """(N, D, H, W) -> bool (N,): any voxel on a face of the box."""
    faces = [masks[:, [0, -1]], masks[:, :, [0, -1]], masks[:, :, :, [0, -1]]]
    return np.stack([f.reshape(len(masks), -1).any(axis=1) for f in faces]).any(axis=0)


def select_masks(masks: np.ndarray, box: tuple[int, int, int], clipped: str = "drop") -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`prepare_masks` whose counts also hold "kept": the (M,) input indices of the masks used."""
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 4:
        raise LeFusionError(f"masks must be (N, D, H, W), got shape {masks.shape}")
    size = np.array(masks.shape[1:])
    if len(box) != 3 or (np.array(box) > size).any():
        raise LeFusionError(f"box {box} does not fit in the stored masks {tuple(size)}")
    lo = (size - np.array(box)) // 2  # the stored masks are centred at (n-1)/2; so is the crop
    crop = masks[:, lo[0] : lo[0] + box[0], lo[1] : lo[1] + box[1], lo[2] : lo[2] + box[2]]
    before, after = masks.reshape(len(masks), -1).sum(1), crop.reshape(len(crop), -1).sum(1)
    touch = _touches_border(crop)
    keep = (after > 0) & (~touch if clipped == "drop" else True)
    counts = {
        "total": int(len(masks)),
        "empty": int((before == 0).sum()),
        "clipped_by_box": int((after < before).sum()),
        "touching_border": int(touch.sum()),
        "used": int(keep.sum()),
    }
    if not keep.any():
        raise LeFusionError(f"no usable mask left after cropping to {box} ({counts})")
    return np.ascontiguousarray(crop[keep]), {**counts, "kept": np.flatnonzero(keep)}


def prepare_masks(masks: np.ndarray, box: tuple[int, int, int], clipped: str = "drop") -> tuple[np.ndarray, dict[str, Any]]:
    """Centre-crop stored masks (N, D0, H0, W0) to `box` -> (bool (M, *box), counts).

    counts: total, empty, clipped_by_box (lost voxels to the crop), touching_border (of the crop,
    includes masks already cut by the stored box), used. Empty masks are always dropped; masks
    touching the border are dropped when clipped == "drop". Raises LeFusionError if the box is
    larger than the stored masks or no mask is left.
    """
    crop, counts = select_masks(masks, box, clipped)
    counts.pop("kept")
    return crop, counts


def augment(mask: np.ndarray, flips: torch.Tensor, quarter_turns: int) -> np.ndarray:
    """Flip a (D, H, W) mask along the axes where flips (3,) is True, then rotate it in-plane
    (y, x) by quarter_turns * 90 degrees (only 0 or 2 turns are meaningful when H != W)."""
    axes = tuple(i for i in range(3) if bool(flips[i]))
    out = np.flip(mask, axis=axes) if axes else mask
    return np.ascontiguousarray(np.rot90(out, k=quarter_turns, axes=(1, 2)))


def make_batch(
    masks: np.ndarray, size: int, gen: torch.Generator, control: ControlKind = "sphere", part: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw `size` masks with replacement, augment, build control regions -> (x0, control, index):
    x0 and control (n, 1, D, H, W) float32 in [-1, 1] for the n samples of `part` (default all:
    n = size), index (size,) the masks drawn for the whole batch.
    Draw order from `gen`, always for all `size`: indices, flips, turns."""
    index = torch.randint(len(masks), (size,), generator=gen)
    flips = torch.rand((size, 3), generator=gen) < 0.5
    square = masks.shape[2] == masks.shape[3]
    turns = torch.randint(4, (size,), generator=gen) if square else 2 * torch.randint(2, (size,), generator=gen)
    x0, spheres = [], []
    for i in range(size)[part]:
        m = augment(masks[int(index[i])], flips[i], int(turns[i]))
        x0.append(m)
        spheres.append(mask_control(m, control, SPACING_MM))
    as_signed = lambda a: torch.from_numpy(np.stack(a)[:, None].astype(np.float32)) * 2 - 1  # noqa: E731
    return as_signed(x0), as_signed(spheres), index


def batch_conditions(
    ratings: np.ndarray, index: torch.Tensor, gen: torch.Generator, cond_drop: float, attribute_drop: float
) -> torch.Tensor:
    """Encoded, dropped conditions (B, 2K) float32 of the masks `index` drew, ratings (M, K) with
    NaN where not rated. Draws from `gen` after make_batch's: u_all (B,), then u_each (B, K)."""
    u_all = torch.rand(len(index), generator=gen, dtype=torch.float64).numpy()
    u_each = torch.rand((len(index), ratings.shape[1]), generator=gen, dtype=torch.float64).numpy()
    cond = encode_ratings(ratings[index.numpy()], [str(k) for k in range(ratings.shape[1])])
    return torch.from_numpy(drop_conditions(cond, u_all, u_each, cond_drop, attribute_drop))


@dataclass(frozen=True)
class DiffMaskBatchDraw:
    """One step's DiffMask batch (:func:`make_batch`, then t (B,) and noise), this rank's `part`:
    x0, sphere, noise (n, 1, D, H, W) float32, t (n,) int64."""

    masks: np.ndarray
    batch_size: int
    num_timesteps: int
    control: ControlKind = "sphere"
    part: slice = field(default_factory=lambda: slice(None))  # all of the batch
    ratings: np.ndarray | None = None  # (M, K) of the masks, for a model with attributes
    cond_drop: float = DEFAULT_COND_DROP
    attribute_drop: float = DEFAULT_ATTRIBUTE_DROP

    def __call__(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        x0, sphere, index = make_batch(self.masks, self.batch_size, gen, self.control, self.part)
        t = torch.randint(self.num_timesteps, (self.batch_size,), generator=gen)
        noise = torch.randn((self.batch_size, *x0.shape[1:]), generator=gen)
        batch = {"x0": x0, "sphere": sphere, "t": t[self.part], "noise": noise[self.part]}
        if self.ratings is not None:  # drawn after the noise, for the whole batch, as in one process
            batch["cond"] = batch_conditions(self.ratings, index, gen, self.cond_drop, self.attribute_drop)[self.part]
        return batch


def _load_masks(source: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    path = Path(source)
    try:
        with np.load(path) as data:
            return data["masks"]
    except (OSError, KeyError, ValueError) as exc:
        raise LeFusionError(f"{path}: cannot read a 'masks' array from it ({exc})") from exc


def train_diffmask(
    train_npz: str | Path | np.ndarray,
    run_dir: str | Path,
    config: DiffMaskTrainConfig,
    denoiser: DenoiserConfig,
    timesteps: int = 100,
    progress: bool = True,
    ratings: np.ndarray | None = None,
) -> Path:
    """Train (or resume) a DiffMask; returns the folder of the exported EMA checkpoint.

    train_npz: an npz with `masks` (N, D0, H0, W0) 0/1 at 1 mm (e.g. lidc_masks_train.npz) or
    the array itself; denoiser: widths/attention (the channel layout is forced to DiffMask's, see
    :func:`~lefusion.masks.diffmask.diffmask_model_config`); timesteps: T of the cosine schedule.
    run_dir receives train_state.pt (resumable), log.csv (step, loss, seconds) and checkpoint/.
    ratings: (N, K) the masks' ratings in the order of `config.attributes` (NaN = not rated), for a
    model with attributes; default: read from the npz
    (:func:`~lefusion.masks.mask_sets.load_training_ratings`).
    """
    cfg, run_dir = config, Path(run_dir)
    model_config = diffmask_model_config(denoiser, timesteps, cfg.box, cfg.prediction, cfg.attributes)
    stored = _load_masks(train_npz)
    if cfg.attributes:
        if ratings is None and isinstance(train_npz, np.ndarray):
            raise LeFusionError("a model with attributes needs the masks' ratings: pass ratings=(N, K) with the masks array")
        ratings = load_training_ratings(train_npz, cfg.attributes) if ratings is None else np.asarray(ratings, dtype=np.float64)
        if ratings.shape != (len(stored), len(cfg.attributes)):
            raise LeFusionError(f"ratings have shape {ratings.shape}, expected {(len(stored), len(cfg.attributes))}")
    masks, counts = select_masks(stored, cfg.box, cfg.clipped)
    kept = counts.pop("kept")
    ratings = ratings[kept] if cfg.attributes else None
    with distributed(cfg.device) as ddp:
        # in a function of its own, so that its DDP wrapper is freed before the process group is
        checkpoint = _train_steps(ddp, masks, ratings, counts, model_config, cfg, timesteps, run_dir, progress)
    return checkpoint


def _train_steps(
    ddp: Distributed,
    masks: np.ndarray,
    ratings: np.ndarray | None,
    counts: dict[str, Any],
    model_config: ModelConfig,
    cfg: DiffMaskTrainConfig,
    timesteps: int,
    run_dir: Path,
    progress: bool,
) -> Path:
    ddp.check_batch(cfg.batch_size)
    device = ddp.device
    run = open_run(run_dir, model_config, cfg.lr, cfg.seed, device, writes=ddp.is_main)
    model, schedule, start = run.model, run.schedule, run.start
    network = ddp.wrap(model)
    draw = DiffMaskBatchDraw(
        masks, cfg.batch_size, schedule.num_timesteps, cfg.control, ddp.part(cfg.batch_size), ratings, cfg.cond_drop, cfg.attribute_drop
    )
    batches = micro_batches(MicroBatches(draw, cfg.seed), start, cfg.steps, cfg.workers, device.type == "cuda")
    weight = ddp.loss_weight(cfg.batch_size)  # 1.0 for one process

    model.train()
    bar = tqdm(
        range(start, cfg.steps), initial=start, total=cfg.steps, desc="diffmask", disable=not (progress and ddp.is_main), unit="step"
    )
    t0 = time.perf_counter()
    for step in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        x0, t, noise = batch["x0"], batch["t"], batch["noise"]
        pred = network(with_context(q_sample(schedule, x0, t, noise), batch["sphere"]), t, batch.get("cond"))
        loss = global_loss(pred, prediction_target(cfg.prediction, schedule, x0, t, noise), cfg.loss_type)
        (loss * weight).backward()
        total = ddp.batch_mean(float(loss.item()), cfg.batch_size)
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
        save_checkpoint(checkpoint, model_config, run.ema.state_dict(), _checkpoint_extra(cfg, counts, masks, timesteps, ratings))
    ddp.barrier()  # every rank returns once the checkpoint is complete
    return checkpoint


def _checkpoint_extra(
    cfg: DiffMaskTrainConfig, counts: dict[str, Any], masks: np.ndarray, timesteps: int, ratings: np.ndarray | None
) -> dict[str, Any]:
    extra = {
        "diffmask": {
            "box": list(cfg.box),
            "spacing_mm": list(SPACING_MM),
            "conditioning": CONDITIONING[cfg.control],
            "control": cfg.control,
            "data": counts,
        },
        "train": {**dataclasses.asdict(cfg), "timesteps": int(timesteps)},
        "steps_done": cfg.steps,
    }
    if cfg.attributes:
        rated = np.isfinite(ratings)
        extra["diffmask"]["attributes"] = list(cfg.attributes)
        extra["diffmask"]["attribute_encoding"] = ENCODING
        extra["diffmask"]["attribute_counts"] = {
            name: {str(v): int((ratings[rated[:, k], k] == v).sum()) for v in np.unique(ratings[rated[:, k], k])}
            for k, name in enumerate(cfg.attributes)
        }
    if cfg.control == "ellipsoid":  # sampling draws the proportions of a random training lesion
        extra["diffmask"]["control_forms"] = pack_forms([mask_form(m, SPACING_MM) for m in masks])
    return extra
