"""`lefusion place`: lesion masks placed inside the organ of whole scans (a plain dataset + lesions.json)."""

from __future__ import annotations

import argparse
import sys

from ..masks.place_dataset import PlaceConfig, place_dataset
from .shapes import add_shape_args, shape_source_from_args


def value_range(kind: type) -> object:
    """argparse type for 'V' or 'MIN:MAX' -> (min, max)."""

    def parse(text: str) -> tuple:
        parts = text.split(":")
        try:
            values = tuple(kind(v) for v in parts)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a number or MIN:MAX, got {text!r}") from exc
        if len(values) == 1:
            return values * 2
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected a number or MIN:MAX, got {text!r}")
        return values

    return parse


def add_place_args(p: argparse.ArgumentParser) -> None:
    """The placement flags, shared by `place` and `augment`."""
    p.add_argument("--scans", required=True, help="folder of whole scans: volume files, DICOM series folders, or a dataset layout")
    p.add_argument("--lesions", type=value_range(int), default=(1, 1), metavar="N|MIN:MAX", help="new lesions per scan (default 1)")
    p.add_argument(
        "--diameter",
        type=value_range(float),
        default=(8.0, 8.0),
        metavar="MM|MIN:MAX",
        help="equivalent diameter in mm, drawn uniformly per lesion (default 8)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--organ-masks",
        help="folder of organ label maps named like the scans (e.g. TotalSegmentator's); default: the built-in lung mask for CT",
    )
    p.add_argument(
        "--organ-labels",
        type=int,
        nargs="+",
        help="organ label ids to place in (default: TotalSegmentator lung lobes 10-14 when present, else every non-zero label)",
    )
    p.add_argument("--margin", type=float, help="mm every lesion keeps from the organ's edge (default: no lesion voxel touches it)")
    p.add_argument("--gap", type=float, default=3.0, help="mm between lesions, new and existing (default 3)")
    p.add_argument("--juxtapleural", action="store_true", help="lesions may touch the organ's edge (e.g. the pleura)")
    p.add_argument("--label", type=int, default=1, help="label id of the new lesions (default 1)")
    add_shape_args(p)


def place_config_from_args(args: argparse.Namespace) -> PlaceConfig:
    return PlaceConfig(
        lesions=tuple(args.lesions),
        diameter_mm=tuple(args.diameter),
        organ_labels=tuple(args.organ_labels) if args.organ_labels else None,
        margin_mm=args.margin,
        gap_mm=args.gap,
        juxtapleural=args.juxtapleural,
        label=args.label,
        seed=args.seed,
    )


def _place(args: argparse.Namespace) -> int:
    source, record = shape_source_from_args(args)
    path, failed = place_dataset(
        args.scans,
        args.out,
        place_config_from_args(args),
        source,
        record,
        args.organ_masks,
        progress=lambda name: print(f"placed: {name}", flush=True),
    )
    for error in failed.values():
        print(f"lefusion: error: {error}", file=sys.stderr)
    print(f"plain dataset in {args.out} (images/, masks/); lesions: {path}" + (f"; {len(failed)} scan(s) failed" if failed else ""))
    return 2 if failed else 0


def add_place_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("place", help="place lesion masks inside the organ of whole scans (DiffMask, real LIDC or hand-crafted shapes)")
    add_place_args(p)
    p.add_argument("--out", required=True, help="output folder: images/ + masks/ (a plain dataset for generate) and lesions.json")
    p.set_defaults(handler=_place)
