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
run exactly; weights, EMA weights, optimizer and step are saved atomically.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoints.format import save_checkpoint
from ..config import PREDICTIONS, DenoiserConfig, Prediction
from ..control.attributes import DEFAULT_ATTRIBUTE_DROP, DEFAULT_COND_DROP, ENCODING, SHAPE_ATTRIBUTES, drop_conditions, encode_ratings
from ..device import resolve_device
from ..diffusion.channels import with_context
from ..diffusion.losses import global_loss, prediction_target
from ..diffusion.process import q_sample
from ..errors import LeFusionError
from ..masks.control_region import CONDITIONING, CONTROL_KINDS, SPACING_MM, ControlKind, mask_control, mask_form, pack_forms
from ..masks.diffmask import diffmask_model_config
from ..masks.mask_sets import load_training_ratings
from .session import open_run, step_generator

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
    masks: np.ndarray, size: int, gen: torch.Generator, control: ControlKind = "sphere"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw `size` masks with replacement, augment, build control regions -> (x0, control, index):
    x0 and control (size, 1, D, H, W) float32 in [-1, 1], index (size,) the masks drawn.
    Draw order from `gen`: indices, flips, turns."""
    index = torch.randint(len(masks), (size,), generator=gen)
    flips = torch.rand((size, 3), generator=gen) < 0.5
    square = masks.shape[2] == masks.shape[3]
    turns = torch.randint(4, (size,), generator=gen) if square else 2 * torch.randint(2, (size,), generator=gen)
    x0, spheres = [], []
    for i in range(size):
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
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    run = open_run(run_dir, model_config, cfg.lr, cfg.seed, device)
    model, ema, schedule, start = run.model, run.ema, run.schedule, run.start

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="diffmask", disable=not progress, unit="step")
    t0 = time.perf_counter()
    for step in bar:
        gen = step_generator(cfg.seed, step, 0)
        x0, sphere, index = make_batch(masks, cfg.batch_size, gen, cfg.control)
        t = torch.randint(schedule.num_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        cond = None if ratings is None else batch_conditions(ratings, index, gen, cfg.cond_drop, cfg.attribute_drop).to(device)
        x0, sphere, t, noise = x0.to(device), sphere.to(device), t.to(device), noise.to(device)
        pred = model(with_context(q_sample(schedule, x0, t, noise), sphere), t, cond)
        loss = global_loss(pred, prediction_target(cfg.prediction, schedule, x0, t, noise), cfg.loss_type)
        loss.backward()
        run.finish_step(
            step,
            float(loss.item()),
            steps=cfg.steps,
            save_every=cfg.save_every,
            max_grad_norm=cfg.max_grad_norm,
            ema_every=cfg.ema_every,
            ema_start=cfg.ema_start,
            ema_decay=cfg.ema_decay,
            seconds=time.perf_counter() - t0,
        )
        bar.set_postfix(loss=f"{loss.item():.4f}")
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
    return save_checkpoint(run_dir / CHECKPOINT_DIR, model_config, ema.state_dict(), extra)
