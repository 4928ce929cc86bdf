"""`lefusion convert` and `lefusion info`: published checkpoints in, our format out; what a checkpoint is."""

from __future__ import annotations

import argparse
import json

from ..checkpoints import load_model, save_model
from ..control.presets import read_presets


def _convert(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, weights=args.weights)
    if args.presets:
        model = model.with_presets(read_presets(args.presets, model.config.denoiser.cond_dim or 0))
    if args.spacing:
        model = model.with_spacing(tuple(args.spacing))
    save_model(model, args.out)
    cfg = model.config
    print(
        f"converted {args.checkpoint} ({args.weights} weights) -> {args.out}\n"
        f"  {cfg.kind} model: dim {cfg.denoiser.dim}, mults {cfg.denoiser.dim_mults}, channels {cfg.denoiser.channels}, "
        f"cond {cfg.denoiser.cond_dim}; lesion labels {cfg.lesion_labels}; {len(cfg.hist_presets)} histogram preset(s); "
        f"ROI {cfg.preprocess.roi_shape} at {_spacing_text(cfg.preprocess.spacing)}"
    )
    return 0


def _spacing_text(spacing: tuple[float, float, float] | None) -> str:
    return "each scan's own spacing" if spacing is None else " x ".join(f"{v:g}" for v in spacing) + " mm"


def _info(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, weights=args.weights)
    n_params = sum(p.numel() for p in model.denoiser.parameters())
    print(
        json.dumps(
            {"source": str(model.source), "sha256": model.weights_sha256, "parameters": n_params, **model.config.to_dict()}, indent=2
        )
    )
    return 0


def _texture_classes(args: argparse.Namespace) -> int:
    from ..training.texture_classes import rated_texture_mapping, read_texture_ratings, write_texture_mapping

    model = load_model(args.checkpoint)
    result = rated_texture_mapping(model, args.data, read_texture_ratings(args.ratings))
    print(json.dumps(result, indent=2))
    if args.write:
        path = write_texture_mapping(args.checkpoint, result["texture_classes"], f"{result['rated_lesions']} rated lesions of {args.data}")
        print(f"recorded in {path} (extra.texture_classes): --texture-class now works with this checkpoint")
    return 0


def add_checkpoint_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="turn a published LeFusion .pt checkpoint into a lefusion folder")
    p.add_argument("checkpoint", help="published .pt file (lidc.pt, emidec.pt, diffmask.pt) or lefusion folder")
    p.add_argument("out", help="output folder (model.safetensors + config.json)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="which weights of a .pt file (default: ema)")
    p.add_argument("--presets", help="histogram presets JSON to store with the model (e.g. lidc_clusters.json)")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("D", "H", "W"),
        help="voxel size in mm the model was trained at, in its (D, H, W) order (published LIDC: 1 1 1, set on import; EMIDEC: "
        "none, each scan's own grid)",
    )
    p.set_defaults(handler=_convert)

    p = sub.add_parser("texture-classes", help="map texture classes (ground-glass / part-solid / solid) to a LeFusion checkpoint's presets")
    p.add_argument("--checkpoint", required=True, help="lefusion checkpoint folder (or bundled name, without --write)")
    p.add_argument("--data", required=True, help="dataset root whose pathological training cases are rated")
    p.add_argument("--ratings", required=True, help="CSV with columns case,texture (LIDC 1..5 or a class name), or a lung phantom.json")
    p.add_argument("--write", action="store_true", help="record the mapping in the checkpoint's config.json")
    p.set_defaults(handler=_texture_classes)

    p = sub.add_parser("info", help="print a checkpoint's kind, architecture and configuration")
    p.add_argument("checkpoint")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.set_defaults(handler=_info)
