"""`lefusion train`: a LeFusion model (or the RePaint / Cond-Diffusion baselines, or Lesion-DDPM) on a dataset folder."""

from __future__ import annotations

import argparse
import os

from ..config import MRI_INTENSITIES, PreprocessConfig, ScheduleConfig, VolumeConfig
from ..errors import LeFusionError
from ..training import TrainConfig, train_on_folder
from ..training.trainer import TRAIN_METHODS
from ..training.volume_run import VOLUME_DENOISER, train_lesion_ddpm
from .common import add_architecture_args, denoiser_from_args

# Architecture defaults per method: the published LIDC network, or the small whole-volume U-Net.
ARCHITECTURE_DEFAULTS = {
    "lefusion": {"dim": 64, "dim_mults": [1, 2, 4, 8], "heads": 8, "dim_head": 32},
    "lesion-ddpm": {
        "dim": VOLUME_DENOISER.dim,
        "dim_mults": list(VOLUME_DENOISER.dim_mults),
        "heads": VOLUME_DENOISER.attn_heads,
        "dim_head": VOLUME_DENOISER.attn_dim_head,
    },
}
VOLUME_ONLY = ("volume_shape", "lesion_weight", "anatomy_labels", "margin_mm", "percentiles")


def _train_config(args: argparse.Namespace, loss: str) -> TrainConfig:
    """The optimisation flags every method shares, as a TrainConfig (the loss is the method's)."""
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        ema_start=args.ema_start,
        ema_decay=args.ema_decay,
        ema_every=args.ema_every,
        save_every=args.save_every,
        seed=args.seed,
        loss=loss,
        loss_type=args.loss_type,
        amp=args.amp,
        device=args.device,
        method=args.method,
        workers=args.workers,
    )


def _train(args: argparse.Namespace) -> int:
    defaults = ARCHITECTURE_DEFAULTS.get(args.method, ARCHITECTURE_DEFAULTS["lefusion"])
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.method == "lesion-ddpm":
        return _train_lesion_ddpm(args)
    given = [f"--{k.replace('_', '-')}" for k in VOLUME_ONLY if getattr(args, k) is not None]
    if given:
        raise LeFusionError(f"{', '.join(given)} belong(s) to --method lesion-ddpm, not {args.method}")
    config = _train_config(args, loss=args.loss or ("global" if args.method == "cond-diffusion" else "lesion"))
    checkpoint = train_on_folder(
        args.data,
        args.out,
        config,
        denoiser_from_args(args),
        ScheduleConfig(timesteps=args.timesteps),
        tuple(args.lesion_labels) if args.lesion_labels else None,
        _preprocess(args),
        args.presets_k,
        mask_input=args.mask_input,
        roi_shape=tuple(args.roi_shape) if args.roi_shape else None,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line for the whole job
        print(f"checkpoint: {checkpoint}")
    return 0


def _train_lesion_ddpm(args: argparse.Namespace) -> int:
    """--method lesion-ddpm: whole volumes from anatomy + lesion masks (`lefusion.training.volume_run`)."""
    refused = (
        ("--loss", args.loss),
        ("--roi-shape", args.roi_shape),
        ("--lesion-labels", args.lesion_labels),
        ("--modality", args.modality),
        ("--mri-intensity", args.mri_intensity),
        ("--spacing", args.spacing),
    )
    for flag, value in refused:
        if value:
            raise LeFusionError(f"{flag} does not apply to --method lesion-ddpm (lesion-weighted L1 on the whole volume, 1 = lesion)")
    if args.mask_input:
        raise LeFusionError("--method lesion-ddpm always sees its masks; drop --mask-input")
    if args.loss_type != "l1":
        raise LeFusionError("--method lesion-ddpm is trained with the lesion-weighted L1 loss; --loss-type l2 does not apply")
    if not args.volume_shape:
        raise LeFusionError("--method lesion-ddpm needs --volume-shape D H W (the model grid, e.g. 48 56 48)")
    volume = VolumeConfig(
        volume_shape=tuple(args.volume_shape),
        anatomy_labels=(1, 2, 3) if args.anatomy_labels is None else tuple(args.anatomy_labels),
        margin_mm=4.0 if args.margin_mm is None else args.margin_mm,
        percentiles=(0.5, 99.9) if args.percentiles is None else tuple(args.percentiles),
        lesion_weight=5.0 if args.lesion_weight is None else args.lesion_weight,
    )
    config = _train_config(args, loss="global")
    denoiser = denoiser_from_args(args)
    checkpoint = train_lesion_ddpm(args.data, args.out, config, volume, denoiser, ScheduleConfig(timesteps=args.timesteps))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {checkpoint}")
    return 0


def _preprocess(args: argparse.Namespace) -> PreprocessConfig | None:
    """The preprocessing the flags ask for; None = the data layout's default (`conventions_for`)."""
    if args.modality is None and args.mri_intensity is None and args.spacing is None:
        return None
    modality = args.modality or ("mri" if args.mri_intensity else "ct")
    return PreprocessConfig(
        modality=modality,
        roi_shape=tuple(args.roi_shape) if args.roi_shape else ((16, 32, 32) if modality == "mri" else (32, 64, 64)),
        spacing=tuple(args.spacing) if args.spacing else None,
        mri_intensity=args.mri_intensity or "roi-minmax",
    )


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LeFusion model on a dataset folder (any supported layout)")
    p.add_argument("--data", required=True, help="dataset root: LeFusion LIDC / EMIDEC layout, images+masks folders, nnU-Net raw")
    p.add_argument("--out", required=True, help="run folder (resumes if it holds a saved state)")
    p.add_argument("--steps", type=int, default=50000)
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="the global batch of one micro-step: under `torchrun --nproc_per_node N` each process takes its share, "
        "so N processes take the steps of one process (docs/cluster.md)",
    )
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-start", type=int, default=0, help="step at which EMA averaging starts (release: 2000)")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--ema-every", type=int, default=10, help="EMA update interval in steps (release: 10)")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--method",
        choices=TRAIN_METHODS,
        default="lefusion",
        help="lefusion (default), or the Cond-Diffusion baseline: masks + masked image as input channels, "
        "global loss, generates the whole ROI; or lesion-ddpm: whole volumes from anatomy (organs/) + lesion masks, "
        "lesion-weighted L1 (needs --volume-shape; its architecture defaults: --dim 16 --dim-mults 1 2 4 --heads 4 --dim-head 16)",
    )
    p.add_argument(
        "--loss",
        choices=["lesion", "global"],
        help="lesion-focused (LeFusion, the default) or global (with --method lefusion: the RePaint baseline; "
        "cond-diffusion always uses global)",
    )
    p.add_argument("--loss-type", choices=["l1", "l2"], default="l1")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda; under torchrun each process uses cuda:LOCAL_RANK")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes building batches ahead of the GPU (same batches as 0)")
    add_architecture_args(p, dim=64, dim_mults=[1, 2, 4, 8], heads=8, dim_head=32, timesteps=300)  # release: LIDC
    p.set_defaults(dim=None, dim_mults=None, heads=None, dim_head=None)  # per method: ARCHITECTURE_DEFAULTS
    p.add_argument(
        "--mask-input",
        action="store_true",
        help="the network also sees the lesion masks as input channels (not in the public release; lets it place "
        "structure inside the lesion, e.g. a part-solid core)",
    )
    p.add_argument("--roi-shape", type=int, nargs=3, metavar=("D", "H", "W"))
    p.add_argument("--modality", choices=["ct", "mri"], help="intensity convention (default by layout; a brain phantom folder: mri)")
    p.add_argument(
        "--mri-intensity",
        choices=MRI_INTENSITIES,
        help="MRI to [-1, 1]: per-ROI min-max, or the whole scan's brain percentiles 0.5 / 99.5 (FLAIR; the brain phantom's default)",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="model voxel size in mm; whole-scan lesion boxes are resampled to it",
    )
    p.add_argument("--lesion-labels", type=int, nargs="+", help="label id of each lesion class (default by layout)")
    p.add_argument("--presets-k", type=int, default=3, help="number of histogram presets (k-means clusters)")
    g = p.add_argument_group("lesion-ddpm (whole volumes)")
    g.add_argument("--volume-shape", type=int, nargs=3, metavar=("D", "H", "W"), help="model grid every brain box is resampled to")
    g.add_argument("--lesion-weight", type=float, help="lambda of the loss weight 1 + lambda * lesion (default 5)")
    g.add_argument(
        "--anatomy-labels",
        type=int,
        nargs="*",
        help="organs/ labels with a condition channel each (default 1 2 3 = CSF, grey, white matter); "
        "given with no value: no organs/, the brain mask image > 0",
    )
    g.add_argument("--margin-mm", type=float, help="space around the brain's bounding box (default 4)")
    g.add_argument(
        "--percentiles", type=float, nargs=2, metavar=("LO", "HI"), help="brain intensity percentiles -> [-1, 1] (default 0.5 99.9)"
    )
    p.set_defaults(handler=_train)
