"""Does DiffMask follow the shape rating it is asked for? Measured on held-out real LIDC nodules.

    python scripts/attribute_benchmark.py --masks-dir lidc_masks --out outputs/attributes \\
        --checkpoint diffmask_lidc --baseline old_diffmask_lidc --n-per-rating 10 --guidance 2 \\
        --threads 2 --montage docs/attribute_montage.png

The masks folder is `lefusion masks lidc`'s (npz with `ratings`). Real nodules are centre-cropped to
the model's box; those touching its border are left out, as in training. A rating class is the
readers' median rounded half up (1..5).

1. Descriptors: the size-free shape descriptors of `lefusion.masks.shape` (sphericity, elongation,
   flatness, extent, solidity) and its irregularity descriptors (radial_cv, opening_loss,
   hull_area_ratio). Size is left out on purpose, so a classifier cannot read a rating from size.
2. Real vs real: per attribute a logistic regression (standardised descriptors, balanced class
   weights; scikit-learn) trained on the TRAINING nodules predicts the rating class of the held-out
   TEST nodules: accuracy, Cohen's kappa, quadratic-weighted kappa, balanced accuracy, and chance
   (the accuracy independent predictions with the same marginals would get: what kappa subtracts).
3. Generated: for every rating r of `--attribute`, `--n-per-rating` masks are requested with that
   rating alone (the other attributes left to the model), box-centred, each with the equivalent
   diameter of a random held-out nodule of class r (so size follows the rating as in real data).
   The same requests (diameters, seeds) go to `--baseline` (an unconditioned model) and, unless
   `--skip-unconditioned`, to the conditioned model asked nothing: their agreement is what size
   alone (and the classifier's bias) yields. Per run: requested-vs-predicted confusion matrix,
   agreement, per-rating median descriptors against the real test nodules of that rating, and
   size accuracy (network's own level 0: within +-20 % of the request; the default size-matched
   threshold meets it by construction).
4. Montage: rows = ratings 1..5 of `--attribute` at one requested diameter; first column a real
   held-out nodule of that class, then generated masks; the axial slice through each centroid.

Raw samples are kept in OUT (keyed by weights, requests, guidance), so a rerun only post-processes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lefusion.control.attributes import SHAPE_ATTRIBUTES
from lefusion.masks.diffmask import (
    attribute_conditions,
    control_regions,
    load_diffmask,
    model_box,
    postprocess,
    sample_x0,
)
from lefusion.masks.shape import IRREGULARITY, equivalent_diameter_mm, irregularity_descriptors, shape_descriptors
from lefusion.training.diffmask import select_masks

SHAPE_KEYS = ("sphericity", "elongation", "flatness", "extent", "solidity")
FEATURES = (*SHAPE_KEYS, *IRREGULARITY)
RATINGS = (1, 2, 3, 4, 5)


def rating_class(values: np.ndarray) -> np.ndarray:
    """Reader medians (may be x.5) -> int class 1..5 (half up); 0 where not rated."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), np.floor(np.nan_to_num(values) + 0.5), 0).astype(int)


def features(mask: np.ndarray) -> np.ndarray:
    d = {**shape_descriptors(mask), **irregularity_descriptors(mask)}
    return np.array([d[k] for k in FEATURES], dtype=np.float64)


def real_sets(masks_dir: Path, box: tuple[int, int, int], out: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per split: masks (M, *box), ratings (M, 4) in SHAPE_ATTRIBUTES order, features (M, F); cached."""
    sets = {}
    for split in ("train", "test"):
        with np.load(masks_dir / f"lidc_masks_{split}.npz") as data:
            names = [str(v) for v in data["rating_names"]]
            masks, counts = select_masks(data["masks"], box, "drop")
            ratings = data["ratings"][counts["kept"]][:, [names.index(a) for a in SHAPE_ATTRIBUTES]]
        cache = out / f"real_{split}_features.npz"
        key = repr((box, len(masks), int(masks.sum()), FEATURES))
        if cache.is_file() and str(np.load(cache)["key"]) == key:
            feats = np.load(cache)["features"]
        else:
            started = time.perf_counter()
            feats = np.stack([features(m) for m in masks])
            np.savez(cache, features=feats, key=key)
            print(f"{split}: descriptors of {len(masks)} nodules in {time.perf_counter() - started:.0f} s", flush=True)
        sets[split] = {"masks": masks, "ratings": ratings, "features": feats}
    return sets


def classifier(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000)).fit(x, y)


def agreement(requested: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    p_req = np.array([(requested == k).mean() for k in RATINGS])
    p_pred = np.array([(predicted == k).mean() for k in RATINGS])
    return {
        "n": int(len(requested)),
        "accuracy": float((requested == predicted).mean()),
        "chance": float((p_req * p_pred).sum()),
        "kappa": float(cohen_kappa_score(requested, predicted, labels=list(RATINGS))),
        "kappa_quadratic": float(cohen_kappa_score(requested, predicted, labels=list(RATINGS), weights="quadratic")),
        "balanced_accuracy": float(balanced_accuracy_score(requested, predicted)),
        "mean_predicted_by_request": {
            int(k): float(predicted[requested == k].mean()) if (requested == k).any() else float("nan") for k in RATINGS
        },
    }


def confusion(requested: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.array([[int(((requested == r) & (predicted == p)).sum()) for p in RATINGS] for r in RATINGS])


def raw_samples(model, requests: dict, guidance: float, out: Path, name: str, batch_size: int) -> np.ndarray:
    """Raw x0 (n, *box) for requests {diameters, seed (request i uses seed + i), attributes (list of
    dicts)}, box-centred; cached in OUT/raw_NAME.npz under a key of weights, requests and guidance."""
    key = repr(
        (model.weights_sha256, [round(float(d), 4) for d in requests["diameters"]], requests["seed"], requests["attributes"], guidance)
    )
    path = out / f"raw_{name}.npz"
    if path.is_file():
        with np.load(path) as data:
            if str(data["key"]) == key:
                return data["x0"]
    started = time.perf_counter()
    cond = attribute_conditions(model, requests["attributes"], len(requests["diameters"]), guidance)
    x0 = sample_x0(model, regions_of(model, requests), None, requests["seed"], batch_size, cond=cond, guidance=guidance).numpy()
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x0=x0, key=key)
    tmp.replace(path)
    print(f"{name}: {len(x0)} samples in {time.perf_counter() - started:.0f} s", flush=True)
    return x0


def regions_of(model, requests: dict) -> np.ndarray:
    box = model_box(model)
    centres = [tuple((s - 1) / 2.0 for s in box)] * len(requests["diameters"])
    return control_regions(model, box, centres, requests["diameters"], requests["seed"])


def evaluate_run(model, x0: np.ndarray, requests: dict, clf, attribute: str) -> dict:
    regions = regions_of(model, requests)
    sized = [postprocess(x, threshold="size", sphere=r) for x, r in zip(x0, regions)]
    own = [postprocess(x, threshold=0.0, sphere=r) for x, r in zip(x0, regions)]
    req_d = np.asarray(requests["diameters"], dtype=np.float64)
    got = np.array([equivalent_diameter_mm(m) for m in own])
    keep = [i for i, m in enumerate(sized) if m.any()]
    feats = np.stack([features(sized[i]) for i in keep])
    requested = np.asarray(requests["rating"])[keep]
    predicted = clf.predict(feats)
    return {
        "size_within_20pct_threshold0": float((np.abs(got / req_d - 1) <= 0.2).mean()),
        "size_within_20pct_size": float((np.abs(np.array([equivalent_diameter_mm(m) for m in sized]) / req_d - 1) <= 0.2).mean()),
        "median_abs_rel_size_err_threshold0": float(np.median(np.abs(got / req_d - 1))),
        "empty": len(sized) - len(keep),
        "agreement": agreement(requested, predicted),
        "confusion": confusion(requested, predicted).tolist(),
        "medians": {int(r): np.median(feats[requested == r], axis=0).round(4).tolist() for r in RATINGS if (requested == r).any()},
        "masks": sized,
    }


def paired_sweep(model, attribute: str, diameter: float, n: int, guidance: float, out: Path, args) -> tuple[list, dict]:
    """n masks per rating 1..5 of `attribute` at one diameter, the SAME seeds (seed + 1000 + j,
    j < n) in every row, so row r and row r' differ only in the rating asked: masks (5 rows of n)
    and per-rating mean descriptors."""
    rows, table = [], {}
    for r in RATINGS:
        requests = {"diameters": [diameter] * n, "seed": args.seed + 1000, "attributes": [{attribute: float(r)}] * n}
        x0 = raw_samples(model, requests, guidance, out, f"paired_{attribute}_{r}_w{guidance:g}", args.batch_size)
        masks = [postprocess(x, threshold="size", sphere=g) for x, g in zip(x0, regions_of(model, requests))]
        rows.append(masks)
        table[r] = np.stack([features(m) for m in masks if m.any()])
    return rows, table


def montage(real: dict, rows: list, attribute: str, diameter: float, guidance: float, path: Path) -> None:
    """Rows = ratings 1..5: a real held-out nodule of that class nearest in size, then the paired masks."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    col = SHAPE_ATTRIBUTES.index(attribute)
    test_cls, test_d = rating_class(real["test"]["ratings"][:, col]), np.array([equivalent_diameter_mm(m) for m in real["test"]["masks"]])
    n = len(rows[0])
    fig, axes = plt.subplots(len(RATINGS), n + 1, figsize=(1.1 * (n + 1), 1.15 * len(RATINGS)), dpi=80)
    for i, r in enumerate(RATINGS):
        cands = np.flatnonzero(test_cls == r)
        real_mask = real["test"]["masks"][cands[np.argmin(np.abs(test_d[cands] - diameter))]] if len(cands) else None
        for j, m in enumerate([real_mask, *rows[i]]):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if m is None or not m.any():
                continue
            z = int(round(np.argwhere(m)[:, 0].mean()))
            ax.imshow(m[z], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(f"{attribute[:5]} {r}", fontsize=7)
                ax.set_title(f"real {equivalent_diameter_mm(m):.0f} mm", fontsize=6)
            elif i == 0 and j == 1:
                ax.set_title(f"DiffMask {diameter:g} mm, w={guidance:g} (same seed per column)", fontsize=6, loc="left")
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"montage: {path}")


def paired_part(model, real: dict, clf, args, text: str, results: dict) -> None:
    """The paired sweep's table (appended to `text`, the main tables; '' with --paired-only) and the montage."""
    rows, paired = paired_sweep(model, args.attribute, args.montage_diameter, args.montage_n, args.guidance, args.out, args)
    from scipy.stats import spearmanr

    extra = [
        "",
        f"Paired sweep: {args.montage_n} seeds x {args.attribute} 1..5 at {args.montage_diameter:g} mm, w={args.guidance:g} "
        "(mean descriptor per requested rating; Spearman rho of rating vs descriptor over all masks):",
        "",
    ]
    extra += ["| requested | predicted (mean) | " + " | ".join(FEATURES) + " |", "|---|---|" + "---|" * len(FEATURES)]
    for r in RATINGS:
        extra.append(f"| {r} | {clf.predict(paired[r]).mean():.2f} | " + " | ".join(f"{v:.3f}" for v in paired[r].mean(axis=0)) + " |")
    ratings_all = np.concatenate([[r] * len(paired[r]) for r in RATINGS])
    feats_all = np.concatenate([paired[r] for r in RATINGS])
    rho = [spearmanr(ratings_all, feats_all[:, k]) for k in range(len(FEATURES))]
    extra.append("| rho (p) | | " + " | ".join(f"{x.statistic:.2f} ({x.pvalue:.2f})" for x in rho) + " |")
    results["paired"] = {int(r): paired[r].mean(axis=0).round(4).tolist() for r in RATINGS}
    print("\n".join(extra))
    stem = "attribute" if text else f"attribute_paired_w{args.guidance:g}"
    (args.out / f"{stem}_table.md").write_text(text + "\n" + "\n".join(extra) + "\n")
    (args.out / f"{stem}_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.montage:
        montage(real, rows, args.attribute, args.montage_diameter, args.guidance, args.montage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("outputs/attributes"))
    parser.add_argument("--checkpoint", default="diffmask_lidc", help="a DiffMask with attribute conditioning")
    parser.add_argument("--baseline", help="an unconditioned DiffMask asked the same requests (size accuracy, size-only agreement)")
    parser.add_argument("--attribute", default="spiculation", choices=SHAPE_ATTRIBUTES)
    parser.add_argument("--n-per-rating", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--skip-unconditioned", action="store_true", help="do not also sample the conditioned model asked nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", choices=["baseline"], help="sample only this run (e.g. the baseline while the model trains)")
    parser.add_argument("--real-only", action="store_true", help="only the real-vs-real part (descriptors, classifiers)")
    parser.add_argument("--paired-only", action="store_true", help="only the paired sweep (e.g. to compare guidance scales)")
    parser.add_argument("--montage", type=Path, help="write the montage PNG here")
    parser.add_argument("--montage-diameter", type=float, default=12.0)
    parser.add_argument("--montage-n", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    model = load_diffmask(args.checkpoint)
    box = model_box(model)
    real = real_sets(args.masks_dir, box, args.out)
    results: dict = {"command": vars(args), "real_vs_real": {}, "runs": {}}
    clfs = {}
    lines = ["### Real vs real (classifier trained on training nodules, applied to held-out test nodules)", ""]
    lines += ["| attribute | n test | accuracy | chance | kappa | kappa (quadratic) | balanced acc |", "|---|---|---|---|---|---|---|"]
    for k, name in enumerate(SHAPE_ATTRIBUTES):
        ytr, yte = rating_class(real["train"]["ratings"][:, k]), rating_class(real["test"]["ratings"][:, k])
        tr, te = ytr > 0, yte > 0
        clfs[name] = classifier(real["train"]["features"][tr], ytr[tr])
        a = agreement(yte[te], clfs[name].predict(real["test"]["features"][te]))
        results["real_vs_real"][name] = a
        lines.append(
            f"| {name} | {a['n']} | {a['accuracy']:.3f} | {a['chance']:.3f} | {a['kappa']:.3f} | "
            f"{a['kappa_quadratic']:.3f} | {a['balanced_accuracy']:.3f} |"
        )
    print("\n".join(lines), flush=True)
    if args.real_only:
        return
    if args.paired_only:
        paired_part(model, real, clfs[args.attribute], args, "", results)
        return

    col = SHAPE_ATTRIBUTES.index(args.attribute)
    test_cls = rating_class(real["test"]["ratings"][:, col])
    test_d = np.array([equivalent_diameter_mm(m) for m in real["test"]["masks"]])
    rng = np.random.default_rng(args.seed)
    requests = {"diameters": [], "seed": args.seed, "attributes": [], "rating": []}
    for r in RATINGS:
        pool = test_d[test_cls == r]
        for d in rng.choice(pool, size=args.n_per_rating, replace=True):
            requests["diameters"].append(float(d))
            requests["attributes"].append({args.attribute: float(r)})
            requests["rating"].append(r)
    runs = {f"conditioned, w={args.guidance:g}": (model, requests, args.guidance, f"cond_w{args.guidance:g}")}
    blank = {**requests, "attributes": [{} for _ in requests["attributes"]]}
    if not args.skip_unconditioned:
        runs["conditioned model, no rating asked"] = (model, blank, 1.0, "cond_none")
    if args.baseline:
        runs["unconditioned (previous bundled model)"] = (load_diffmask(args.baseline), blank, 1.0, "baseline")
    if args.only:
        runs = {k: v for k, v in runs.items() if v[3] == args.only}
    clf = clfs[args.attribute]
    real_medians = {
        int(r): np.median(real["test"]["features"][test_cls == r], axis=0).round(4).tolist() for r in RATINGS if (test_cls == r).any()
    }
    lines += ["", f"### Requested vs predicted {args.attribute} ({args.n_per_rating} per rating)", ""]
    lines += [
        "| run | n | accuracy | chance | kappa | kappa (quadratic) | mean predicted for requested 1/2/3/4/5 | size ±20 % (own level 0) | median size err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rv = results["real_vs_real"][args.attribute]
    lines.append(
        f"| real held-out (real vs real) | {rv['n']} | {rv['accuracy']:.3f} | {rv['chance']:.3f} | {rv['kappa']:.3f} | "
        f"{rv['kappa_quadratic']:.3f} | " + " / ".join(f"{v:.2f}" for v in rv["mean_predicted_by_request"].values()) + " | | |"
    )
    for label, (m, req, w, tag) in runs.items():
        x0 = raw_samples(m, req, w, args.out, f"{tag}_{args.attribute}", args.batch_size)
        ev = evaluate_run(m, x0, req, clf, args.attribute)
        ev.pop("masks")
        results["runs"][label] = ev
        a = ev["agreement"]
        lines.append(
            f"| {label} | {a['n']} | {a['accuracy']:.3f} | {a['chance']:.3f} | {a['kappa']:.3f} | {a['kappa_quadratic']:.3f} | "
            + " / ".join(f"{v:.2f}" for v in a["mean_predicted_by_request"].values())
            + f" | {ev['size_within_20pct_threshold0']:.3f} | {ev['median_abs_rel_size_err_threshold0']:.3f} |"
        )
    first = next(iter(results["runs"]))
    lines += ["", f"Confusion, {first} (rows requested {args.attribute} 1..5, columns predicted 1..5):", ""]
    lines += ["| requested | " + " | ".join(str(r) for r in RATINGS) + " |", "|---|" + "---|" * len(RATINGS)]
    lines += [f"| {r} | " + " | ".join(str(v) for v in row) + " |" for r, row in zip(RATINGS, results["runs"][first]["confusion"])]
    lines += ["", f"Median descriptors per {args.attribute} rating, real held-out / {first}:", ""]
    lines += ["| rating | n real | " + " | ".join(FEATURES) + " |", "|---|---|" + "---|" * len(FEATURES)]
    gen = results["runs"][first]["medians"]
    for r in RATINGS:
        real_r, gen_r = real_medians.get(r), gen.get(r)
        cells = [
            f"{a:.3f} / {b:.3f}" if real_r and gen_r else "-" for a, b in zip(real_r or [0] * len(FEATURES), gen_r or [0] * len(FEATURES))
        ]
        lines.append(f"| {r} | {int((test_cls == r).sum())} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\n".join(lines[lines.index(f"### Requested vs predicted {args.attribute} ({args.n_per_rating} per rating)") :]))
    (args.out / "attribute_table.md").write_text(text + "\n")
    (args.out / "attribute_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    paired_part(model, real, clf, args, text, results)


if __name__ == "__main__":
    main()
