"""`lefusion generate`: lesions into the cases of a dataset folder, with a method from the registry."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..checkpoints import load_model
from ..control.presets import read_presets
from ..errors import LeFusionError
from ..generation import METHODS, GenerateConfig, MethodRequest, build_method, generate_dataset
from ..generation.methods import expand_presets
from ..generation.whole_volume import METHOD as LESION_DDPM
from ..generation.whole_volume import check_lesion_ddpm, generate_volumes
from .common import (
    add_resampling_args,
    add_sampler_args,
    add_shard_arg,
    add_texture_class_args,
    presets_for_texture_class,
    sampler_from_args,
    shard_from_args,
    texture_class_from_args,
)


def _generate(args: argparse.Namespace) -> int:
    shard = shard_from_args(args)
    model = load_model(args.checkpoint, weights=args.weights) if args.checkpoint else None
    if args.method == LESION_DDPM or (args.method is None and model is not None and model.kind == LESION_DDPM):
        return _generate_volumes(args, model, shard)
    if model is not None and model.kind == LESION_DDPM:
        raise LeFusionError(f"{args.checkpoint}: is a lesion-ddpm model (whole volumes); use --method lesion-ddpm, not {args.method}")
    if model is not None and args.presets_file:
        model = model.with_presets(read_presets(args.presets_file, model.config.denoiser.cond_dim or 0))
    if args.texture and len(args.texture) % 2:
        raise LeFusionError(
            f"--texture takes MEAN STD pairs (one for all lesion classes or one per class), got {len(args.texture)} number(s)"
        )
    if args.texture and texture_class_from_args(args):
        raise LeFusionError("--texture MEAN STD (the hand-crafted baseline's own intensities) and --texture-class exclude each other")
    by_class = presets_for_texture_class(args, model)
    config = GenerateConfig(
        presets=by_class or tuple(args.preset or ["mix"]),
        texture_class=texture_class_from_args(args),
        seed=args.seed,
        sampler=sampler_from_args(args),
        interpolation=args.interpolation,
        mask_resampling=args.mask_resampling,
        batch_size=args.batch_size,
        device=args.device,
        max_cases=args.max_cases,
    )
    texture = list(zip(args.texture[::2], args.texture[1::2])) if args.texture else None
    method = build_method(args.method, MethodRequest(Path(args.data), config, model, args.donors, texture, args.smoothing))
    config = dataclasses.replace(config, presets=expand_presets(list(by_class) if by_class else args.preset, method))
    manifest = generate_dataset(method, args.data, args.out, config, shard=shard)
    print(f"outputs in {args.out} (manifest: {manifest})")
    return 0


def _generate_volumes(args: argparse.Namespace, model, shard) -> int:
    """--method lesion-ddpm: a whole synthetic volume per case (`lefusion.generation.whole_volume`)."""
    model = check_lesion_ddpm(model)
    ignored = {
        "--preset": args.preset,
        "--texture": args.texture,
        "--donors": args.donors,
        "--presets-file": args.presets_file,
        "--texture-class": texture_class_from_args(args),
    }
    given = [flag for flag, value in ignored.items() if value]
    if given:
        raise LeFusionError(f"{', '.join(given)} do(es) not apply to --method lesion-ddpm: it generates the whole volume from the masks")
    config = GenerateConfig(
        seed=args.seed, sampler=sampler_from_args(args), batch_size=args.batch_size, device=args.device, max_cases=args.max_cases
    )
    manifest = generate_volumes(model, args.data, args.out, config, shard=shard)
    print(f"outputs in {args.out} (manifest: {manifest})")
    return 0


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="inpaint lesions into normal scans with a trained or published model (or a baseline)")
    p.add_argument(
        "--method",
        choices=[*METHODS, LESION_DDPM],
        help="default: the checkpoint's own kind (lefusion, cond-diffusion or lesion-ddpm); or a non-learned baseline: "
        "copy-paste (real donor lesions), handcrafted (smoothed noise). lesion-ddpm writes a whole synthetic volume per "
        "case of --data from its masks/ (+ organs/), as images/ masks/ organs/ + manifest.json",
    )
    p.add_argument(
        "--checkpoint",
        help="lefusion checkpoint folder, published .pt or bundled model name (required for lefusion "
        "and cond-diffusion; for copy-paste / handcrafted, optional: its ROI conventions and presets are used, "
        "else the data layout's)",
    )
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--data", required=True, help="dataset root (for the LIDC layout its Normal/ cases are used)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", nargs="+", help="K (1-based), 'mix' (5:20:75, the default), 'all', or a histogram JSON; several allowed")
    add_texture_class_args(p)
    p.add_argument("--presets-file", help="histogram presets JSON for a checkpoint that has none (e.g. lidc_clusters.json)")
    add_sampler_args(p, "lefusion: ddnm with 25 steps (--sampler time-travel: the published jump 10 x 10); cond-diffusion: ancestral")
    add_resampling_args(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-cases", type=int)
    p.add_argument("--device", default="auto")
    add_shard_arg(p)
    p.add_argument(
        "--donors",
        help="baselines: dataset root whose pathological training cases give the real lesions "
        "(copy-paste: required; handcrafted without --checkpoint: texture presets fitted to them)",
    )
    p.add_argument(
        "--texture",
        type=float,
        nargs="+",
        metavar="MEAN STD",
        help="handcrafted: lesion mean and std in source units (HU for CT), one pair for all classes or one per class",
    )
    p.add_argument("--smoothing", type=float, default=1.0, help="handcrafted: Gaussian smoothing of the noise, in voxels (default 1)")
    p.set_defaults(handler=_generate)
