"""`lefusion evaluate quality`: image-quality metrics of a generated dataset against the real one.

Registered under `lefusion evaluate` by `add_quality_parser(esub)`, where `esub` is the evaluate
command's sub-parsers object.
"""

from __future__ import annotations

import argparse


def _quality(args: argparse.Namespace) -> int:
    from .evaluation.quality_report import QualityConfig, evaluate_quality

    config = QualityConfig(patch_size=tuple(args.patch_size), n_projections=args.projections, seed=args.seed)
    summary = evaluate_quality(args.generated, args.real, args.out, config)
    sets = summary["sets"]
    print(
        f"{summary['outputs']} outputs ({summary['paired']} paired with a real case); "
        f"sliced Wasserstein {sets['swd']}, MMD {sets['mmd']} over {sets['n_generated']} generated / {sets['n_real']} real patches\n"
        f"  {args.out}/quality.csv (per output), quality.md (summary), quality.json"
    )
    return 0


def add_quality_parser(esub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `quality` to the `evaluate` command's sub-parsers; returns the new parser."""
    p = esub.add_parser("quality", help="PSNR / SSIM (paired), sliced Wasserstein / MMD (unpaired), histogram and background errors")
    p.add_argument("--generated", required=True, help="a `lefusion generate` output folder (images/, labels/, manifest.json)")
    p.add_argument("--real", required=True, help="the real dataset root (any supported layout); its pathological cases are the reference")
    p.add_argument("--out", required=True, help="folder for quality.csv, quality.md, quality.json")
    p.add_argument("--patch-size", type=int, nargs=3, default=[16, 16, 16], metavar=("D", "H", "W"), help="lesion patch size in voxels")
    p.add_argument("--projections", type=int, default=128, help="random projections of the sliced Wasserstein distance")
    p.add_argument("--seed", type=int, default=0, help="seed of the projections")
    p.set_defaults(handler=_quality)
    return p
