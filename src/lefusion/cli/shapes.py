"""Flags that pick the lesion shapes to place (`place`, `augment`), and the shape source they build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..control.attributes import check_rating
from ..device import resolve_device
from ..errors import LeFusionError
from ..masks.diffmask import load_diffmask
from ..masks.mask_sets import load_training_masks
from ..masks.shapes import SHAPE_SOURCES, DiffMaskShapes, HandcraftedShapes, LidcShapes, ShapeSource
from .common import sampler_from_args


def rating(name: str):
    """argparse type for a 1..5 LIDC rating."""

    def parse(text: str) -> float:
        try:
            return check_rating(name, text)
        except LeFusionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def add_attribute_args(p: argparse.ArgumentParser, margin_flag: str = "--margin") -> None:
    """--sphericity/--lobulation/--spiculation/MARGIN_FLAG 1..5 and --guidance: shape ratings for a
    DiffMask conditioned on them. `place` / `augment` already use --margin (mm from the organ's
    edge), so there the margin rating is --margin-rating."""
    group = p.add_argument_group("shape ratings (LIDC 1..5; a DiffMask trained with --attributes, e.g. the bundled diffmask_lidc)")
    helps = {
        "sphericity": "1 linear ... 3 ovoid ... 5 round",
        "margin": "1 poorly defined ... 5 sharp",
        "lobulation": "1 none ... 5 marked",
        "spiculation": "1 none ... 5 marked",
    }
    for name, text in helps.items():
        flags = [margin_flag] if name == "margin" else [f"--{name}"]
        if name == "margin" and margin_flag != "--margin-rating":
            flags.append("--margin-rating")
        group.add_argument(*flags, dest=f"rating_{name}", type=rating(name), metavar="1-5", help=text)
    group.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale for the ratings (1 = plain conditional, the default; > 1 follows them harder, "
        "twice the network evaluations)",
    )


def attributes_from_args(args: argparse.Namespace) -> dict[str, float]:
    """{name: rating} of the rating flags given."""
    names = ("sphericity", "margin", "lobulation", "spiculation")
    return {n: getattr(args, f"rating_{n}") for n in names if getattr(args, f"rating_{n}", None) is not None}


def add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shapes",
        choices=SHAPE_SOURCES,
        default="diffmask",
        help="lesion shapes: diffmask (default: the bundled model of real LIDC nodules), lidc (real nodule masks, "
        "needs --lidc-masks), handcrafted (warped ellipsoids)",
    )
    p.add_argument("--mask-checkpoint", default="diffmask_lidc", help="DiffMask checkpoint for --shapes diffmask (default: bundled)")
    p.add_argument("--lidc-masks", help="`lefusion masks lidc` output folder (or its npz) for --shapes lidc")
    p.add_argument("--mask-device", default="cpu", help="device for DiffMask sampling (default cpu)")
    add_attribute_args(p, margin_flag="--margin-rating")


def shape_source_from_args(args: argparse.Namespace) -> tuple[ShapeSource, dict[str, Any]]:
    """(the source, its record for lesions.json) from the flags."""
    attributes = attributes_from_args(args)
    if args.shapes != "diffmask" and (attributes or args.guidance != 1.0):
        raise LeFusionError(f"shape ratings and --guidance need --shapes diffmask (a DiffMask trained with attributes), not {args.shapes}")
    if args.shapes == "diffmask":
        model = load_diffmask(args.mask_checkpoint, device=resolve_device(args.mask_device))
        sampler = sampler_from_args(args) if hasattr(args, "mask_sampler") else None
        record = {"source": "diffmask", "checkpoint": str(model.source), "sha256": model.weights_sha256}
        if attributes:
            record.update(attributes=attributes, guidance=args.guidance)
        return DiffMaskShapes(model, sampler, attributes=attributes, guidance=args.guidance), record
    if args.shapes == "lidc":
        if not args.lidc_masks:
            raise LeFusionError("--shapes lidc needs --lidc-masks DIR (made by `lefusion masks lidc --out DIR`)")
        masks = load_training_masks(Path(args.lidc_masks))
        return LidcShapes(np.asarray(masks), str(args.lidc_masks)), {"source": "lidc", "masks": str(args.lidc_masks)}
    return HandcraftedShapes(), {"source": "handcrafted"}
