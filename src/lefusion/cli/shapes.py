"""Flags that pick the lesion shapes to place (`place`, `augment`), and the shape source they build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..errors import LeFusionError
from ..masks.diffmask import load_diffmask
from ..masks.mask_sets import load_training_masks
from ..masks.shapes import SHAPE_SOURCES, DiffMaskShapes, HandcraftedShapes, LidcShapes, ShapeSource
from .common import sampler_from_args


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


def shape_source_from_args(args: argparse.Namespace) -> tuple[ShapeSource, dict[str, Any]]:
    """(the source, its record for lesions.json) from the flags."""
    if args.shapes == "diffmask":
        model = load_diffmask(args.mask_checkpoint, device=resolve_device(args.mask_device))
        sampler = sampler_from_args(args) if hasattr(args, "mask_sampler") else None
        return DiffMaskShapes(model, sampler), {"source": "diffmask", "checkpoint": str(model.source), "sha256": model.weights_sha256}
    if args.shapes == "lidc":
        if not args.lidc_masks:
            raise LeFusionError("--shapes lidc needs --lidc-masks DIR (made by `lefusion masks lidc --out DIR`)")
        masks = load_training_masks(Path(args.lidc_masks))
        return LidcShapes(np.asarray(masks), str(args.lidc_masks)), {"source": "lidc", "masks": str(args.lidc_masks)}
    return HandcraftedShapes(), {"source": "handcrafted"}
