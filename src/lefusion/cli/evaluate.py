"""`lefusion evaluate ...`: does the synthetic data help? Downstream segmentation and image quality.

The evaluation stack (MONAI, scikit-image, matplotlib) is the `lefusion[eval]` extra, so it is
imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse

from ..optional import require_extra

_SYNTHETIC_HELP = (
    "synthetic training sets, each [METHOD:]SET=DIR. DIR is a `lefusion generate` output folder "
    "(images/, labels/, manifest.json). SET is P' (lesions generated on the real pathological "
    "training masks), N' (lesions on normal cases) or N'' (more lesions on normal cases); ASCII "
    "spellings Pp, Np, Npp work too. METHOD names what made the set (default: the method the "
    "folder's manifest records, e.g. copy-paste, else lefusion), so "
    "baselines meet LeFusion in the same settings, e.g. "
    '"lefusion:N\'=gen/lf_normal" "copy-paste:N\'=gen/cp_normal" "handcrafted:N\'=gen/hc_normal". '
    "Quote each value: the shell treats ' as a quote"
)
_SETTINGS_HELP = (
    "training settings by name: P (real pathological training cases only), P+P', P+N', P+N'', "
    "P+P'+N'' (ASCII: P+Pp, P+Np, ...). Each runs once per method that provides its sets. "
    "Default: P plus every paper setting the given --synthetic sets allow"
)


def _segmentation(args: argparse.Namespace) -> int:
    import torch

    require_extra("monai", "matplotlib", "skimage")
    from ..evaluation.segmentation import BenchmarkConfig, TrainSettings, parse_synthetic, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    train = TrainSettings(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, amp=not args.no_amp)
    config = BenchmarkConfig(
        settings=tuple(args.settings) if args.settings else None,
        networks=tuple(args.network),
        seeds=tuple(args.seeds),
        train=train,
        width=args.width,
        deep_supervision=args.deep_supervision,
        nsd_tolerance=args.nsd_tolerance,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        lesion_labels=tuple(args.lesion_labels) if args.lesion_labels else None,
        modality=args.modality,
        device=args.device,
        workers=args.workers,
        threads_per_worker=args.threads or 1,
    )
    specs = [parse_synthetic(text) for text in args.synthetic]
    paths = run_benchmark(args.real, specs, args.out, config)
    print(paths["summary.md"].read_text())
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _whole_scan(args: argparse.Namespace) -> int:
    import torch

    require_extra("monai")
    from ..evaluation.segmentation import TrainSettings
    from ..evaluation.segmentation.whole_scan import WholeScanConfig, run_whole_scan_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    config = WholeScanConfig(
        settings=tuple(args.settings),
        seeds=tuple(args.seeds),
        train=TrainSettings(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, amp=not args.no_amp, batch_dice=True),
        foreground_fraction=args.foreground_fraction,
        patch_shape=tuple(args.patch_size),
        width=args.width,
        overlap=args.overlap,
        nsd_tolerance=args.nsd_tolerance,
        lesion_labels=tuple(args.lesion_labels),
        organ_labels=tuple(args.organ_labels) if args.organ_labels else None,
        device=args.device,
        modality=args.modality,
        organ_name=args.organ_name or ("lungs" if args.modality == "ct" else "organ"),
    )
    summary = run_whole_scan_benchmark(args.real, args.augmented, args.out, config, organs=args.organs)
    print(summary.read_text())
    print(f"results: {summary}, {summary.parent / 'summary.json'}, {summary.parent / 'per_case.csv'}")
    return 0


def add_whole_scan_parser(esub: argparse._SubParsersAction) -> None:
    """Add `whole-scan` to the `evaluate` command's sub-parsers."""
    p = esub.add_parser(
        "whole-scan",
        help="patch-trained segmenter, sliding-window inference on held-out whole scans: real vs real + augmented",
        description="Train a MONAI 3D U-Net on patches of whole scans (real only, and real + a `lefusion augment` "
        "output), predict the real dataset's held-out whole scans by sliding windows, and report Dice, NSD, HD95, "
        "lesion-level sensitivity and false positives per scan (in and outside the lungs).",
    )
    p.add_argument(
        "--real", required=True, help="real whole-scan dataset (images/ + masks/ or labels/, test.txt naming the held-out scans)"
    )
    p.add_argument(
        "--augmented", help="a `lefusion augment` output folder (images/ + labels/); same-named real training scans are replaced"
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=["real", "real+augmented"],
        choices=["real", "real+augmented", "synthetic"],
        help="real: the real training scans; real+augmented: with the --augmented scans replacing / added to them; "
        "synthetic: the --augmented scans alone (default: real real+augmented)",
    )
    p.add_argument(
        "--modality",
        choices=["ct", "mri"],
        default="ct",
        help="intensity normalisation: ct (nnU-Net CT scheme, default) or mri (per-scan z-score over non-zero voxels; needs organ maps)",
    )
    p.add_argument(
        "--organ-name", help="what the report calls the organ of the false-positive split (default: lungs for CT, organ for MRI)"
    )
    p.add_argument("--organs", help="organ label maps of the test scans (default: REAL/organs/ if present, else the built-in lung mask)")
    p.add_argument(
        "--organ-labels",
        type=int,
        nargs="+",
        help="lung label ids in --organs (default: lobes 10-14 if present, else every non-zero label)",
    )
    p.add_argument("--lesion-labels", type=int, nargs="+", default=[1], help="label ids that are lesions (default 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--patch-size", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"), help="training patch and sliding window, voxels"
    )
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    p.add_argument(
        "--foreground-fraction", type=float, default=1 / 3, help="share of training patches centred on a lesion (default 1/3, as nnU-Net)"
    )
    p.add_argument("--width", type=int, help="U-Net base width (default 16)")
    p.add_argument("--nsd-tolerance", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", required=True, help="results folder (resumes from the runs saved there)")
    p.set_defaults(handler=_whole_scan)


def _reconstruction(args: argparse.Namespace) -> int:
    require_extra("monai")
    from ..evaluation.reconstruction import evaluate_reconstruction

    summary = evaluate_reconstruction(args.generated, args.organs, args.out)
    print(
        f"{summary['method']}: {summary['cases']} scans; lesion MAE {summary['mae_lesion']:.4f}, "
        f"lesion MSE {summary['mse_lesion']:.4f}, MS-SSIM {summary['ms_ssim']:.4f} (units: the real scan's brain range)\n"
        f"  {args.out}/reconstruction.json"
    )
    return 0


def add_reconstruction_parser(esub: argparse._SubParsersAction) -> None:
    """Add `reconstruction` to the `evaluate` command's sub-parsers."""
    p = esub.add_parser(
        "reconstruction",
        help="lesion-region MAE / MSE and MS-SSIM of generated scans against the real scans they were generated from",
    )
    p.add_argument(
        "--generated", required=True, help="a `lefusion generate` output folder made from real pathological scans (manifest.json)"
    )
    p.add_argument("--organs", help="organ label maps named like the real scans (default: the real scan's non-zero voxels)")
    p.add_argument("--out", required=True, help="folder for reconstruction.json")
    p.set_defaults(handler=_reconstruction)


def _quality(args: argparse.Namespace) -> int:
    require_extra("skimage")
    from ..evaluation.quality_report import QualityConfig, evaluate_quality

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


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """`lefusion evaluate` with its subcommands (segmentation; quality is added beside it)."""
    evaluate = sub.add_parser("evaluate", help="does the synthetic data help? downstream segmentation, image quality")
    esub = evaluate.add_subparsers(dest="evaluate_command", required=True)

    p = esub.add_parser(
        "segmentation",
        help="train segmenters on real + synthetic mixes (P, P+P', P+N', ...) and score them on real test cases",
        description=(
            "Train MONAI segmenters on the real pathological training cases plus synthetic sets, predict the real "
            "held-out test cases, and report Dice, NSD and HD95 per lesion class (mean ± std over seeds) as "
            "per_case.csv, summary.csv, summary.md and summary.png in --out. Resumable: finished runs are kept "
            "in --out/runs and skipped when re-run."
        ),
    )
    p.add_argument("--real", required=True, help="real dataset root (any layout lefusion reads); its held-out test cases are the test set")
    p.add_argument("--synthetic", nargs="+", default=[], metavar="[METHOD:]SET=DIR", help=_SYNTHETIC_HELP)
    p.add_argument("--settings", nargs="+", metavar="SETTING", help=_SETTINGS_HELP)
    p.add_argument(
        "--network",
        nargs="+",
        default=["unet"],
        choices=["unet", "dynunet", "swinunetr"],
        help="segmenters: unet (plain 3D U-Net), dynunet (nnU-Net-style plan), swinunetr (needs einops); default unet",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one training run per seed (default 0 1 2)")
    p.add_argument("--iterations", type=int, default=1000, help="training iterations per run (default 1000)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, decayed polynomially (default 1e-3)")
    p.add_argument("--width", type=int, help="base width of every network (default: unet 16, dynunet 32, swinunetr 24)")
    p.add_argument("--deep-supervision", action="store_true", help="dynunet: deep supervision, as nnU-Net")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD surface tolerance in mm (default 1)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="only for a dataset without a test split: fraction of patients held out (seeded by --split-seed)",
    )
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--lesion-labels", type=int, nargs="+", help="label ids to score (default by layout: LIDC 1; EMIDEC 3 4)")
    p.add_argument("--modality", choices=["ct", "mri"], help="intensity normalisation (default by layout)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA (default: mixed precision)")
    p.add_argument("--threads", type=int, help="torch CPU threads (per worker with --workers; default: torch's choice, 1 per worker)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs trained side by side, one process each (default 1). On a CPU, N workers x 1 thread "
        "finish the runs sooner than 1 process x N threads; the results are the same",
    )
    p.add_argument("--out", required=True, help="results folder (resumes from the runs saved there)")
    p.set_defaults(handler=_segmentation)

    add_quality_parser(esub)
    add_whole_scan_parser(esub)
    add_reconstruction_parser(esub)
