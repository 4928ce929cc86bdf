"""`lefusion augment`: whole scans in, an augmented training set out (place + generate [+ nnU-Net])."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..checkpoints import load_model
from ..errors import LeFusionError
from ..generation import GenerateConfig, MethodRequest, build_method
from ..generation.augment import AugmentConfig
from ..generation.methods import expand_presets
from ..jobs import NnunetTarget, run_augment
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
from .place import add_place_args, place_config_from_args
from .shapes import shape_source_from_args


def _augment(args: argparse.Namespace) -> int:
    if (args.nnunet_id is None) != (args.name is None):
        raise LeFusionError("--nnunet-id and --name go together (nnU-Net's DatasetNNN_NAME)")
    shard = shard_from_args(args)
    model = load_model(args.checkpoint)
    by_class = presets_for_texture_class(args, model)
    generate = GenerateConfig(
        presets=by_class or tuple(args.preset or ["mix"]),
        texture_class=texture_class_from_args(args),
        seed=args.seed,
        sampler=sampler_from_args(args),
        interpolation=args.interpolation,
        mask_resampling=args.mask_resampling,
        batch_size=args.batch_size,
        device=args.device,
    )
    method = build_method(args.method, MethodRequest(Path(args.scans), generate, model))
    generate = dataclasses.replace(generate, presets=expand_presets(list(by_class) if by_class else args.preset, method))
    config = AugmentConfig(
        place_config_from_args(args), generate, Path(args.organ_masks) if args.organ_masks else None, not args.no_previews
    )
    shapes, record = shape_source_from_args(args)
    nnunet = NnunetTarget(args.nnunet_id, args.name) if args.nnunet_id is not None else None
    result, exported = run_augment(args.scans, args.out, method, shapes, record, config, nnunet, shard=shard)
    for error in result.failed.values():
        print(f"lefusion: error: {error}", file=sys.stderr)
    print(
        f"{result.outputs} augmented scan(s), {result.lesions} new lesion(s) in {args.out} (images/, labels/, previews/); manifest: {result.manifest}"
    )
    if exported is not None:
        print(exported.describe())
    return 2 if result.failed else 0


def add_augment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "augment", help="whole scans in, an augmented training set out: place lesions, generate them, assemble (nnU-Net optional)"
    )
    add_place_args(p)
    p.add_argument("--out", required=True, help="output folder: images/, labels/, previews/, manifest.json (intermediates in work/)")
    p.add_argument("--checkpoint", default="demo_lung", help="lesion model: folder, published .pt or bundled name (default demo_lung)")
    p.add_argument("--method", choices=["lefusion", "cond-diffusion"], help="default: the checkpoint's kind")
    p.add_argument(
        "--preset", nargs="+", help="texture: K, 'mix' (default), 'all' or a histogram JSON; several make several outputs per scan"
    )
    add_texture_class_args(p)
    add_sampler_args(p, "lefusion: ddnm with 25 steps (--sampler time-travel: the published jump 10 x 10)")
    add_resampling_args(p)
    p.add_argument("--batch-size", type=int, default=4, help="lesions generated together")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-previews", action="store_true", help="skip the PNG per scan")
    p.add_argument("--nnunet-id", type=int, help="also write OUT/nnUNet_raw/DatasetNNN_NAME with every augmented scan as a training case")
    p.add_argument("--name", help="nnU-Net dataset name (with --nnunet-id)")
    add_shard_arg(p)
    p.set_defaults(handler=_augment)
