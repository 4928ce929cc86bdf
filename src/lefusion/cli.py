"""Command line: each subcommand parses its flags, builds a config and makes one library call.

Errors a user can act on (LeFusionError) are printed as one line, `lefusion: error: ...`, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cli_common import add_architecture_args, denoiser_from_args
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


def _phantom(args: argparse.Namespace) -> int:
    from .phantoms import write_cardiac_phantom, write_lung_phantom

    kwargs = {"seed": args.seed}
    if args.n_pathological is not None:
        kwargs["n_pathological"] = args.n_pathological
    if args.kind == "lung" and (args.n_test is not None or args.n_pathological is not None):
        # hold out about one case in six unless told otherwise
        kwargs["n_test"] = args.n_test if args.n_test is not None else max(1, (args.n_pathological or 48) // 6)
    if args.n_normal is not None:
        kwargs["n_normal"] = args.n_normal
    if args.roi_shape:
        kwargs["roi_shape"] = tuple(args.roi_shape)
    if args.spacing:
        kwargs["spacing"] = tuple(args.spacing)
    writer = write_lung_phantom if args.kind == "lung" else write_cardiac_phantom
    summary = writer(Path(args.out), **kwargs)
    counts = ", ".join(f"{len(summary[k])} {k}" for k in ("pathological", "normal", "test") if k in summary)
    print(f"wrote {args.kind} phantom to {args.out}: {counts}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import PreprocessConfig, ScheduleConfig
    from .training import TrainConfig
    from .training.run import conventions_for, train_on_folder

    train_cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, ema_start=args.ema_start,
        ema_decay=args.ema_decay, ema_every=args.ema_every,
        save_every=args.save_every, seed=args.seed, loss=args.loss or ("global" if args.method == "cond-diffusion" else "lesion"),
        loss_type=args.loss_type, amp=args.amp, device=args.device, method=args.method,
    )
    # channels and condition size follow the data's lesion classes (set by train_on_folder)
    denoiser = denoiser_from_args(args)
    preprocess = None
    if args.roi_shape:
        base = conventions_for(Path(args.data)).preprocess
        preprocess = PreprocessConfig(modality=base.modality, roi_shape=tuple(args.roi_shape), window=base.window)
    labels = tuple(args.lesion_labels) if args.lesion_labels else None
    checkpoint = train_on_folder(
        args.data, args.out, train_cfg, denoiser, ScheduleConfig(timesteps=args.timesteps), labels, preprocess, args.presets_k,
        mask_input=args.mask_input,
    )
    print(f"checkpoint: {checkpoint}")
    return 0


def _generate_method(args: argparse.Namespace) -> tuple[Any, tuple[tuple[float, ...], ...]]:
    """(method for generate_dataset: a model or a baseline, the presets `--preset K/all` refer to) from the flags."""
    from .checkpoints import load_model
    from .control.presets import read_presets

    model = None
    if args.checkpoint:
        model = load_model(args.checkpoint, weights=args.weights)
        if args.presets_file:
            model = model.with_presets(read_presets(args.presets_file, model.config.denoiser.cond_dim or 0))
    if args.method == "cond-diffusion":
        from .baselines import CondDiffusionGenerator

        if model is None:
            raise LeFusionError("--checkpoint is required for --method cond-diffusion (a model from `lefusion train --method cond-diffusion`)")
        if args.donors or args.texture:
            raise LeFusionError("--donors and --texture belong to --method copy-paste / handcrafted, not cond-diffusion")
        method = CondDiffusionGenerator(model, device=args.device)
        return method, method.presets
    if args.method == "lefusion":
        if model is None:
            raise LeFusionError("--checkpoint is required for --method lefusion (only the baselines run without one)")
        if args.donors or args.texture:
            raise LeFusionError("--donors and --texture belong to --method copy-paste / handcrafted, not lefusion")
        return model, model.config.hist_presets
    from .baselines import make_baseline

    if args.method == "copy-paste" and (args.preset or args.texture):
        raise LeFusionError("copy-paste takes each lesion's texture from a real donor lesion; --preset and --texture do not apply")
    if args.texture and args.preset:
        raise LeFusionError("give the hand-crafted texture either as --preset (histogram presets) or as --texture MEAN STD, not both")
    if args.texture and len(args.texture) % 2:
        raise LeFusionError(f"--texture takes MEAN STD pairs (one for all lesion classes or one per class), got {len(args.texture)} number(s)")
    texture = list(zip(args.texture[::2], args.texture[1::2])) if args.texture else None
    method = make_baseline(args.method, args.data, model=model, donors=args.donors, texture=texture, smoothing=args.smoothing)
    return method, method.presets


def _generate(args: argparse.Namespace) -> int:
    from .generation import GenerateConfig, generate_dataset

    method, available = _generate_method(args)
    preset = args.preset or ["mix"]
    if preset == ["all"] and not available:
        raise LeFusionError("--preset all: there are no histogram presets (give --presets-file, or for handcrafted --donors)")
    presets = tuple(str(p) for p in range(1, len(available) + 1)) if preset == ["all"] else tuple(preset)
    config = GenerateConfig(
        presets=presets, seed=args.seed, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
        batch_size=args.batch_size, device=args.device, max_cases=args.max_cases,
    )
    manifest = generate_dataset(method, args.data, args.out, config)
    print(f"outputs in {args.out} (manifest: {manifest})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lefusion", description="Controllable lesion synthesis in 3D medical scans with lesion-focused diffusion (LeFusion)."
    )
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

    p = sub.add_parser("phantom", help="write a procedural phantom dataset (lung CT: LIDC layout; cardiac MRI: EMIDEC layout)")
    p.add_argument("kind", choices=["lung", "cardiac"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pathological", type=int)
    p.add_argument("--n-normal", type=int)
    p.add_argument("--n-test", type=int, help="lung: held-out pathological cases listed in test.txt")
    p.add_argument("--roi-shape", type=int, nargs=3, metavar=("D", "H", "W"))
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in mm")
    p.set_defaults(handler=_phantom)

    p = sub.add_parser("train", help="train a LeFusion model on a dataset folder (any supported layout)")
    p.add_argument("--data", required=True, help="dataset root: LeFusion LIDC / EMIDEC layout, images+masks folders, nnU-Net raw")
    p.add_argument("--out", required=True, help="run folder (resumes if it holds a saved state)")
    p.add_argument("--steps", type=int, default=50000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-start", type=int, default=0, help="step at which EMA averaging starts (release: 2000)")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--ema-every", type=int, default=10, help="EMA update interval in steps (release: 10)")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=["lefusion", "cond-diffusion"], default="lefusion",
                   help="lefusion (default), or the Cond-Diffusion baseline: masks + masked image as input channels, "
                   "global loss, generates the whole ROI")
    p.add_argument("--loss", choices=["lesion", "global"],
                   help="lesion-focused (LeFusion, the default) or global (with --method lefusion: the RePaint baseline; "
                   "cond-diffusion always uses global)")
    p.add_argument("--loss-type", choices=["l1", "l2"], default="l1")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--device", default="auto")
    add_architecture_args(p, dim=64, dim_mults=[1, 2, 4, 8], heads=8, dim_head=32, timesteps=300)  # release: LIDC
    p.add_argument("--mask-input", action="store_true",
                   help="the network also sees the lesion masks as input channels (not in the public release; lets it place "
                   "structure inside the lesion, e.g. a part-solid core)")
    p.add_argument("--roi-shape", type=int, nargs=3, metavar=("D", "H", "W"))
    p.add_argument("--lesion-labels", type=int, nargs="+", help="label id of each lesion class (default by layout)")
    p.add_argument("--presets-k", type=int, default=3, help="number of histogram presets (k-means clusters)")
    p.set_defaults(handler=_train)

    p = sub.add_parser("generate", help="inpaint lesions into normal scans with a trained or published model (or a baseline)")
    p.add_argument("--method", choices=["lefusion", "copy-paste", "handcrafted", "cond-diffusion"], default="lefusion",
                   help="lefusion (default), a non-learned baseline: copy-paste (real donor lesions), handcrafted (smoothed noise), "
                   "or cond-diffusion (a checkpoint from `train --method cond-diffusion`; regenerates the whole ROI)")
    p.add_argument("--checkpoint", help="lefusion checkpoint folder or published .pt (required for lefusion and cond-diffusion; "
                   "for copy-paste / handcrafted, optional: its ROI conventions and presets are used, else the data layout's)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--data", required=True, help="dataset root (for the LIDC layout its Normal/ cases are used)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", nargs="+", help="K (1-based), 'mix' (5:20:75, the default), 'all', or a histogram JSON; several allowed")
    p.add_argument("--presets-file", help="histogram presets JSON for a checkpoint that has none (e.g. lidc_clusters.json)")
    p.add_argument("--jump-length", type=int, default=10, help="lefusion's time travel (cond-diffusion: plain DDPM, ignored)")
    p.add_argument("--jump-n-sample", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-cases", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--donors", help="baselines: dataset root whose pathological training cases give the real lesions "
                   "(copy-paste: required; handcrafted without --checkpoint: texture presets fitted to them)")
    p.add_argument("--texture", type=float, nargs="+", metavar="MEAN STD",
                   help="handcrafted: lesion mean and std in source units (HU for CT), one pair for all classes or one per class")
    p.add_argument("--smoothing", type=float, default=1.0, help="handcrafted: Gaussian smoothing of the noise, in voxels (default 1)")
    p.set_defaults(handler=_generate)

    from .cli_evaluate import add_evaluate_parser
    from .cli_export import add_export_parser
    from .cli_masks import add_masks_parser

    add_masks_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)

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
