"""Evaluate a trained DiffMask on held-out LIDC nodules; prints markdown tables.

    python benchmarks/diffmask_eval.py --checkpoint runs/diffmask/checkpoint \\
        --masks-dir ~/.cache/lefusion/lidc_masks [--n-shape 200] [--n-control 200] [--batch-size 8]
    ... --raw outputs/dm_raw --postprocess 0.5,0 0,0 0,-0.3   # post-processing variants side by side

The masks folder is the output of ``lefusion.masks.lidc.build_lidc_masks`` (lidc_masks_train.npz,
lidc_masks_test.npz). Real sets are centre-cropped to the model's box; nodules touching the crop's
border are left out (DiffMask cannot draw what its box cannot hold) and counted.

(a) Shape realism: every candidate set vs the REAL TEST nodules (``shape_distance``, test set as
    the normalising reference, 0 = same distribution, 1 = shifted by one real-data std). Rows: real
    train (the floor: two samples of the same population), DiffMask, its control region alone (the
    sphere or ellipsoid the network is conditioned on, taken as the mask: what the network adds),
    the hand-crafted baseline; synthetic sets get diameters drawn from the test set's equivalent diameters, centred.
(b) Size / location control over ``--n-control`` requests: diameters drawn from the test set,
    centres jittered within the box (the sphere kept inside it), and a synthetic boundary (an
    ellipsoid of semi-axes 0.35 x box) that cuts some spheres. Size and centroid accuracy are
    scored on requests whose sphere lies inside the boundary; containment on all samples.
    Goals: >= 90 % within +-20 % of the requested equivalent diameter, 100 % inside the boundary.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lefusion.masks.diffmask import (
    DEFAULT_SMOOTHING_SIGMA,
    control_regions,
    load_diffmask,
    model_box,
    model_control,
    postprocess,
    sample_x0,
)
from lefusion.masks.handcrafted import handcrafted_mask
from lefusion.masks.shape import DESCRIPTORS, equivalent_diameter_mm, shape_descriptors, shape_distance
from lefusion.training.diffmask import prepare_masks

SHORT = {
    "volume_mm3": "vol",
    "equivalent_diameter_mm": "diam",
    "surface_area_mm2": "area",
    "sphericity": "spher",
    "elongation": "elong",
    "flatness": "flat",
    "extent": "extent",
    "solidity": "solid",
    "component_count": "comps",
}


def descriptors(masks: list[np.ndarray]) -> tuple[list[dict[str, float]], int]:
    """Shape descriptors of the non-empty masks, and how many were empty."""
    out = [shape_descriptors(m) for m in masks if m.any()]
    return out, len(masks) - len(out)


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def raw_samples(model, name: str, diameters, centres, boundary, args) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw DiffMask samples (n, D, H, W) in [-1, 1], their control regions (n, D, H, W) and seconds
    per sample. With --raw DIR the samples are kept in DIR/NAME.npz and reused by a later run with
    the same weights and requests, so post-processing variants can be compared without sampling again."""
    spheres = control_regions(model, model_box(model), centres, diameters, args.seed)
    key = {
        "weights": model.weights_sha256,
        "seed": args.seed,
        "spheres": int(spheres.sum()),
        "n": len(spheres),
        "boundary": None if boundary is None else int(boundary.sum()),
    }
    path = args.raw / f"{name}.npz" if args.raw else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == repr(key):
                return data["x0"], spheres, float(data["seconds"])
    started = time.perf_counter()
    x0 = sample_x0(model, spheres, boundary, seed=args.seed, batch_size=args.batch_size).numpy()
    seconds = (time.perf_counter() - started) / max(len(x0), 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, x0=x0, seconds=seconds, key=repr(key))
        tmp.replace(path)
    return x0, spheres, seconds


def diffmask_variants(model, name: str, diameters, centres, boundary, args) -> dict[str, tuple[list[np.ndarray], float]]:
    """One set of raw samples, post-processed with every --postprocess SIGMA,THRESHOLD variant."""
    x0, regions, seconds = raw_samples(model, name, diameters, centres, boundary, args)
    out = {}
    for sigma, threshold in args.postprocess:
        label = "DiffMask" if len(args.postprocess) == 1 else f"DiffMask s={sigma:g} thr={threshold}"
        out[label] = ([postprocess(x, sigma, threshold, boundary, r) for x, r in zip(x0, regions)], seconds)
    return out


def shape_table(model, box, train: np.ndarray, test: np.ndarray, args) -> str:
    rng = np.random.default_rng(args.seed)
    test_diam = np.array([equivalent_diameter_mm(m) for m in test])
    diameters = rng.choice(test_diam, size=args.n_shape, replace=True)
    centre = tuple((s - 1) / 2.0 for s in box)
    real_test, _ = descriptors(list(test))
    train_idx = rng.choice(len(train), size=min(len(train), args.n_real), replace=False)
    sets = {"real train (floor)": (descriptors([train[i] for i in train_idx]), float("nan"))}
    for label, (dm, sec) in diffmask_variants(model, "shape", diameters, [centre] * len(diameters), None, args).items():
        sets[label] = (descriptors(dm), sec)
    # Ablation: the control region the network is given, used as the mask itself (for an ellipsoid
    # model it already carries a real lesion's proportions, so the network must beat it).
    regions = control_regions(model, box, [centre] * len(diameters), diameters, args.seed)
    sets[f"control {model_control(model)} alone (no network)"] = (descriptors(list(regions)), float("nan"))
    started = time.perf_counter()
    hc = [handcrafted_mask(box, d, centre, generator=np.random.default_rng([args.seed, i])) for i, d in enumerate(diameters)]
    sets["hand-crafted"] = (descriptors(hc), (time.perf_counter() - started) / len(hc))
    header = ["set vs real test", "n", "empty", "score", *(SHORT[k] for k in DESCRIPTORS), "s/mask"]
    rows = []
    for name, ((desc, empty), sec) in sets.items():
        dist = shape_distance(real_test, desc, reference=real_test)
        rows.append([name, len(desc) + empty, empty, dist["score"], *(dist[k] for k in DESCRIPTORS), sec])
    medians = [
        [name, *(float(np.median([d[k] for d in desc])) for k in DESCRIPTORS)]
        for name, ((desc, _), _) in {"real test": ((real_test, 0), 0), **sets}.items()
    ]
    return (
        f"### (a) Shape distance to {len(real_test)} real test nodules (Wasserstein / test std)\n\n"
        + table(header, rows)
        + "\n\nMedian descriptor values:\n\n"
        + table(["set", *(SHORT[k] for k in DESCRIPTORS)], medians)
    )


def control_requests(box, test: np.ndarray, n: int, seed: int, jitter: float):
    """n (diameter, centre) requests: diameters from the test set, centres within +-jitter voxels
    of the box centre, pulled in so the sphere stays inside the box."""
    rng = np.random.default_rng(seed + 1)
    diameters = rng.choice([equivalent_diameter_mm(m) for m in test], size=n, replace=True)
    centre = np.array([(s - 1) / 2.0 for s in box])
    room = np.maximum((np.array(box)[None] - diameters[:, None]) / 2.0 - 1.0, 0.0)  # (n, 3) voxels
    centres = centre + np.clip(rng.uniform(-jitter, jitter, size=(n, 3)), -room, room)
    return diameters, centres


def ellipsoid(box, fraction: float = 0.35) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s) for s in box], indexing="ij")
    return sum(((g - (s - 1) / 2.0) / (fraction * s)) ** 2 for g, s in zip(grids, box)) <= 1.0


def control_table(model, box, test: np.ndarray, args) -> str:
    diameters, centres = control_requests(box, test, args.n_control, args.seed, args.jitter)
    boundary = ellipsoid(box)
    regions = control_regions(model, box, [tuple(c) for c in centres], diameters, args.seed)
    uncut = np.array([not (r & ~boundary).any() for r in regions])  # the model's own control regions
    variants = diffmask_variants(model, "control", diameters, [tuple(c) for c in centres], boundary, args)
    started = time.perf_counter()
    hc = [
        handcrafted_mask(box, d, c, generator=np.random.default_rng([args.seed, 7, i]), boundary=boundary)
        for i, (d, c) in enumerate(zip(diameters, centres))
    ]
    hc_sec = (time.perf_counter() - started) / len(hc)
    rows, bins = [], []
    for name, (masks, s) in {**variants, "hand-crafted": (hc, hc_sec)}.items():
        got = np.array([equivalent_diameter_mm(m) for m in masks])
        rel = np.abs(got / diameters - 1.0)
        err = np.array([np.linalg.norm(np.array(ndimage.center_of_mass(m)) - c) if m.any() else np.nan for m, c in zip(masks, centres)])
        inside = np.mean([not (m & ~boundary).any() for m in masks])
        empty = int(sum(not m.any() for m in masks))
        rows.append(
            [
                name,
                len(masks),
                int(uncut.sum()),
                empty,
                float(np.mean(rel[uncut] <= 0.2)),
                float(np.mean(rel <= 0.2)),
                float(np.median(rel[uncut])),
                float(np.nanmedian(err[uncut])),
                float(inside),
                s,
            ]
        )
        for lo, hi in ((0, 5), (5, 8), (8, 12), (12, 20), (20, 99)):
            sel = uncut & (diameters >= lo) & (diameters < hi)
            if sel.any():
                bins.append(
                    [
                        name,
                        f"[{lo}, {hi})",
                        int(sel.sum()),
                        float(np.mean(rel[sel] <= 0.2)),
                        float(np.median(got[sel] / diameters[sel])),
                        float(np.nanmedian(err[sel])),
                    ]
                )
    header = [
        "method",
        "n",
        "uncut",
        "empty",
        "size +-20% (uncut)",
        "size +-20% (all)",
        "median abs rel size err",
        "median centroid err (vox)",
        "inside boundary",
        "s/mask",
    ]
    return (
        f"### (b) Size / location control: {args.n_control} requests, jitter +-{args.jitter} vox, ellipsoid boundary\n\n"
        + table(header, rows)
        + "\n\nBy requested diameter (uncut requests):\n\n"
        + table(["method", "diameter mm", "n", "size +-20%", "median got/requested", "median centroid err"], bins)
    )


def _variant(text: str) -> tuple[float, float | str]:
    sigma, threshold = text.split(",")
    return float(sigma), threshold if threshold == "size" else float(threshold)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--masks-dir", type=Path, required=True)
    parser.add_argument("--n-shape", type=int, default=200, help="DiffMask / hand-crafted masks for table (a)")
    parser.add_argument("--n-real", type=int, default=1000, help="real train masks for the floor row of table (a)")
    parser.add_argument("--n-control", type=int, default=200, help="requests for table (b)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=4.0, help="centre jitter in voxels for table (b)")
    parser.add_argument(
        "--postprocess",
        nargs="+",
        type=_variant,
        default=[(DEFAULT_SMOOTHING_SIGMA, "size")],
        metavar="SIGMA,THRESHOLD",
        help="post-processing variants compared on the same raw samples (default: the library's); "
        "THRESHOLD 'size' matches the requested volume",
    )
    parser.add_argument("--raw", type=Path, default=None, help="keep / reuse the raw samples in this folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip", choices=["shape", "control"], default=None)
    parser.add_argument("--device", default="cpu", help="torch device for sampling, e.g. cuda")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_diffmask(args.checkpoint, device=args.device)
    box = model_box(model)
    sets = {}
    for split in ("train", "test"):
        with np.load(args.masks_dir / f"lidc_masks_{split}.npz") as data:
            sets[split], counts = prepare_masks(data["masks"], box, "drop")
        print(f"{split}: {counts} (box {box})")
    print(
        f"\nmodel: {args.checkpoint} T={model.schedule.num_timesteps} dim={model.config.denoiser.dim} "
        f"mults={model.config.denoiser.dim_mults} control={model_control(model)}; {args.device}, threads={torch.get_num_threads()}\n"
    )
    if args.skip != "shape":
        print(shape_table(model, box, sets["train"], sets["test"], args) + "\n")
    if args.skip != "control":
        print(control_table(model, box, sets["test"], args))


if __name__ == "__main__":
    main()
