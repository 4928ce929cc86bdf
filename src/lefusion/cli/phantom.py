"""`lefusion phantom`: the embedded procedural datasets, in the real datasets' layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..phantoms import PHANTOMS, write_phantom


def _phantom(args: argparse.Namespace) -> int:
    summary = write_phantom(
        args.kind,
        Path(args.out),
        seed=args.seed,
        n_pathological=args.n_pathological,
        n_normal=args.n_normal,
        n_test=args.n_test,
        roi_shape=tuple(args.roi_shape) if args.roi_shape else None,
        spacing=tuple(args.spacing) if args.spacing else None,
        fov_mm=tuple(args.fov) if args.fov else None,
        skull=args.skull,
        layout=args.layout,
    )
    counts = ", ".join(f"{len(summary[k])} {k}" for k in ("pathological", "normal", "test") if k in summary)
    print(f"wrote {args.kind} phantom to {args.out}: {counts}")
    return 0


def add_phantom_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a procedural phantom dataset (lung CT ROIs: LIDC layout; cardiac MRI: EMIDEC layout; whole-chest CT: plain layout + organ labels; "
        "brain FLAIR on the MNI152 template with MS-like lesions: plain or nnU-Net layout + organ labels)",
    )
    p.add_argument("kind", choices=sorted(PHANTOMS))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pathological", type=int)
    p.add_argument("--n-normal", type=int)
    p.add_argument("--n-test", type=int, help="held-out pathological cases listed in test.txt (default: lung one in six, chest half)")
    p.add_argument("--roi-shape", type=int, nargs=3, metavar=("D", "H", "W"), help="lung / cardiac: ROI size in voxels")
    p.add_argument(
        "--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in mm (chest default 2.5 0.8 0.8, brain 1 1 1)"
    )
    p.add_argument("--fov", type=float, nargs=3, metavar=("Z", "Y", "X"), help="chest: field of view in mm (default 280 350 350)")
    p.add_argument(
        "--skull",
        action="store_true",
        default=None,
        help="brain: keep a (procedural) skull and scalp; default skull-stripped, 0 outside the brain",
    )
    p.add_argument(
        "--layout", choices=["plain", "nnunet"], help="brain: plain (images/ masks/ organs/, the default) or an nnU-Net v2 raw dataset"
    )
    p.set_defaults(handler=_phantom)
