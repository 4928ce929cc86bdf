"""`lefusion demo`: the main job on the embedded phantom data (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import run_demo


def _demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), seed=args.seed)
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded phantom data")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_demo)
