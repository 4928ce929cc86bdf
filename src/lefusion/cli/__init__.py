"""Command line: one module per command group; each subcommand parses its flags, builds a config
and makes one library call.

Errors a user can act on (LeFusionError) are printed as one line, `lefusion: error: ...`, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import LeFusionError
from .augment import add_augment_parser
from .checkpoint import add_checkpoint_parsers
from .demo import add_demo_parser
from .evaluate import add_evaluate_parser
from .export import add_export_parser
from .generate import add_generate_parser
from .manifest import add_manifest_parser
from .masks import add_masks_parser
from .phantom import add_phantom_parser
from .place import add_place_parser
from .train import add_train_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lefusion", description="Controllable lesion synthesis in 3D medical scans with lesion-focused diffusion (LeFusion)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_checkpoint_parsers,
        add_phantom_parser,
        add_train_parser,
        add_generate_parser,
        add_place_parser,
        add_augment_parser,
        add_masks_parser,
        add_manifest_parser,
        add_evaluate_parser,
        add_export_parser,
        add_demo_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except LeFusionError as exc:
        print(f"lefusion: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lefusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
