"""Command line: each subcommand parses its flags, builds a config and makes one library call.

Errors a user can act on (LeFusionError) are printed as one line, `lefusion: error: ...`, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import LeFusionError

Handler = Callable[[argparse.Namespace], int]


def _convert(args: argparse.Namespace) -> int:
    from .checkpoints import load_model
    from .control.presets import read_presets

    model = load_model(args.checkpoint, weights=args.weights)
    if args.presets:
        model = model.with_presets(read_presets(args.presets, model.config.denoiser.cond_dim or 0))
    model.save(args.out)
    cfg = model.config
    print(
        f"converted {args.checkpoint} ({args.weights} weights) -> {args.out}\n"
        f"  architecture: dim {cfg.denoiser.dim}, mults {cfg.denoiser.dim_mults}, channels {cfg.denoiser.channels}, "
        f"cond {cfg.denoiser.cond_dim}; lesion labels {cfg.lesion_labels}; {len(cfg.hist_presets)} histogram preset(s)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from .checkpoints import load_model

    model = load_model(args.checkpoint, weights=args.weights)
    n_params = sum(p.numel() for p in model.denoiser.parameters())
    print(json.dumps({"source": str(model.source), "sha256": model.weights_sha256, "parameters": n_params, **model.config.to_dict()}, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lefusion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="turn a published LeFusion .pt checkpoint into a lefusion folder")
    p.add_argument("checkpoint", help="published .pt file (lidc.pt, emidec.pt, diffmask.pt) or lefusion folder")
    p.add_argument("out", help="output folder (model.safetensors + config.json)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="which weights of a .pt file (default: ema)")
    p.add_argument("--presets", help="histogram presets JSON to store with the model (e.g. lidc_clusters.json)")
    p.set_defaults(handler=_convert)

    p = sub.add_parser("info", help="print a checkpoint's architecture and configuration")
    p.add_argument("checkpoint")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.set_defaults(handler=_info)

    p = sub.add_parser("demo", help="run the main job on the embedded phantom data")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_demo)
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
