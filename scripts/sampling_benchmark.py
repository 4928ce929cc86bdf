"""Quality against network evaluations: every sampler side by side on one model, in one run.

    python scripts/sampling_benchmark.py --model demo_lung --out outputs/sampling/demo_lung --threads 1
    python scripts/sampling_benchmark.py --model diffmask_lidc --masks-dir data/lidc_masks --out outputs/sampling/diffmask
    python scripts/sampling_benchmark.py --model MODEL --rows ancestral ddnm:steps=10 "time-travel:jump_length=5,jump_n_sample=5"
    python scripts/sampling_benchmark.py --model tiny.pt --timing-only --rows ...   # random weights: cost only

A row is a sampler, `KIND[:SETTING=VALUE,...][@SEED]` (the settings of `sampler_from_dict`; @SEED
a second noise seed of the same sampler, to show the seed-to-seed spread). Every row generates the
same lesions: for a lesion model (LeFusion, RePaint-style global-loss model, Cond-Diffusion)
`--cases` normal ROIs of a phantom of the model's kind (lung or cardiac, seed 1, which the bundled
models were not trained on) x every texture preset, through `generate_dataset` (the CLI's path,
so the manifest's `network_evaluations` is what is reported, and a forward hook counts the
network's calls to check it); for DiffMask, `--n-masks` centred requests with equivalent
diameters drawn from the held-out LIDC test nodules.

Figures per row (scripts/sampling_metrics.py): network evaluations per lesion, seconds per lesion
(sampling only, one batch, this machine), histogram control (W1 of each lesion to its own preset,
mean ± standard error over lesions; share of lesions nearest their own preset), realism against
`--real` real lesions of the same phantom (sliced Wasserstein / MMD of lesion patches), the seam
(mean intensity step across the mask boundary and inside the lesion, HU for CT, next to the real
lesions' values); for DiffMask the shape distance to the real test nodules and the share of
requests whose own-threshold mask is within ±20 % of the requested diameter.

Writes OUT/table.md, OUT/results.json and OUT/plot.png and prints the table. Re-running resumes:
finished rows are read back, not generated again (OUT/rows/NAME/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sampling_metrics as sm  # noqa: E402

from lefusion.checkpoints import load_model  # noqa: E402
from lefusion.data.layouts import find_cases  # noqa: E402
from lefusion.diffusion.sampling import SamplerConfig, sampler_from_dict  # noqa: E402
from lefusion.generation import GenerateConfig, MethodRequest, build_method, generate_dataset  # noqa: E402
from lefusion.generation.pipeline import generation_cases  # noqa: E402

REFERENCE_ROWS = [
    "ancestral",
    "ancestral@1",
    "time-travel:jump_length=2,jump_n_sample=2",
    "time-travel:jump_length=5,jump_n_sample=5",
    "time-travel:jump_length=10,jump_n_sample=10",
]
FEW_STEP_ROWS = [
    *(f"ddnm:steps={k}" for k in (5, 10, 25, 50, 100)),
    *(f"{kind}:steps={k}" for kind in ("ddim", "diffpir") for k in (5, 10, 25)),
    *(f"{kind}:steps={k},jump_length={j},jump_n_sample=2" for kind in ("ddnm", "ddim", "diffpir") for k, j in ((10, 1), (25, 5))),
    "ddnm:steps=10,eta=0",
    "ddim:steps=10,eta=1",
    "diffpir:steps=10,zeta=1",
]
LESION_ROWS = REFERENCE_ROWS + FEW_STEP_ROWS
MASK_ROWS = ["ancestral", "ancestral@1", *(f"ddnm:steps={k}" for k in (5, 10, 25)), "ddim:steps=10", "diffpir:steps=10"]


def parse_row(text: str) -> tuple[SamplerConfig, int]:
    """'KIND[:K=V,...][@SEED]' -> (sampler, seed offset)."""
    spec, _, seed = text.partition("@")
    kind, _, settings = spec.partition(":")
    record: dict = {"kind": kind}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        record[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return sampler_from_dict(record), int(seed or 0)


def row_name(text: str) -> str:
    return text.replace(":", "_").replace(",", "_").replace("=", "").replace("@", "_seed")


class CountCalls:
    """Counts the denoiser's forward calls (one call = one evaluation for the whole batch)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_args) -> None:
        self.calls += 1


def claim(folder: Path) -> bool:
    """Claim a row for this process (so that two processes can share one --out); False if another
    live process holds it. The claim is the holder's pid in folder/claimed."""
    folder.mkdir(parents=True, exist_ok=True)
    mark = folder / "claimed"
    if mark.is_file():
        try:
            os.kill(int(mark.read_text()), 0)
            return int(mark.read_text()) == os.getpid()
        except (ProcessLookupError, ValueError):
            pass
    mark.write_text(str(os.getpid()))
    return True


def write_phantom(model, root: Path, cases: int, real: int) -> str:
    """A held-out phantom (seed 1) of the model's kind at its ROI shape; returns the kind."""
    phantom = model.extra.get("phantom", {})
    roi = tuple(phantom.get("roi_shape", model.config.preprocess.roi_shape))
    if (root / "phantom.json").is_file():
        return json.loads((root / "phantom.json").read_text()).get("kind", "lung")
    if model.config.preprocess.modality == "mri":
        from lefusion.phantoms.cardiac import write_cardiac_phantom

        write_cardiac_phantom(
            root, n_pathological=real, n_normal=cases, seed=1, roi_shape=roi, spacing=tuple(phantom.get("spacing", (8.0, 1.4, 1.4)))
        )
        kind = "cardiac"
    else:
        from lefusion.phantoms import write_lung_phantom

        write_lung_phantom(
            root,
            n_pathological=real,
            n_normal=cases,
            n_test=1,
            seed=1,
            roi_shape=roi,
            spacing=tuple(phantom.get("spacing", (1.4, 1.4, 1.4))),
        )
        kind = "lung"
    meta = json.loads((root / "phantom.json").read_text()) if (root / "phantom.json").is_file() else {}
    (root / "phantom.json").write_text(json.dumps({**meta, "kind": kind}))
    return kind


def lesion_row(model, data: Path, folder: Path, text: str, args) -> dict | None:
    """One row on the first `--cases` normal cases: generate what is missing (counting the
    network's calls, kept in folder/calls.json) and measure those lesions. None when another
    process is generating this row."""
    sampler, seed = parse_row(text)
    presets = tuple(str(i) for i in range(1, len(model.config.hist_presets) + 1))
    sources = {str(c.image) for c in generation_cases(data)[: args.cases]}
    out, calls_path = folder / "generated", folder / "calls.json"
    manifest_path = out / "manifest.json"
    entries = json.loads(manifest_path.read_text())["outputs"].values() if manifest_path.is_file() else []
    if sum(e["source_image"] in sources for e in entries) < len(sources) * len(presets):
        if not claim(folder):
            return None
        config = GenerateConfig(
            presets=presets, seed=seed, sampler=sampler, batch_size=args.batch_size, max_cases=args.cases, previews=False, device="cpu"
        )
        counter = CountCalls(model.denoiser)
        before = len(entries)
        method = build_method(None, MethodRequest(data, config, model))  # the model's own kind: lefusion or cond-diffusion
        entries = json.loads(generate_dataset(method, data, out, config, progress=False).read_text())["outputs"].values()
        counter.handle.remove()
        made = len(entries) - before
        calls = json.loads(calls_path.read_text()) if calls_path.is_file() else []
        calls.append({"lesions": made, "batches": -(-made // args.batch_size), "calls": counter.calls})
        calls_path.write_text(json.dumps(calls))
    entries = [e for e in entries if e["source_image"] in sources]
    evaluations = sorted({e["network_evaluations"] for e in entries})
    calls = json.loads(calls_path.read_text()) if calls_path.is_file() else []
    for c in calls:
        if c["calls"] != evaluations[0] * c["batches"]:
            raise RuntimeError(
                f"{folder}: the network ran {c['calls']} times for {c['batches']} batch(es), the manifest says {evaluations[0]} each"
            )
    row = {
        "row": text,
        "sampler": sampler.to_dict(),
        "seed": seed,
        "evaluations": evaluations[0],
        "calls_checked": calls,
        "seconds": float(np.mean([e["seconds"] for e in entries])),
        "lesions": len(entries),
    }
    if args.timing_only:
        return row
    found = sm.generated_set(model, out, args.patch_size, sources)
    w1, w1_sem = sm.mean_sem(found.own_w1)
    edge, edge_sem = sm.mean_sem(found.edge)
    inside, _ = sm.mean_sem(found.inside)
    swd, mmd = sm.realism(found.patches, args.real_patches, args.bandwidth)
    return {
        **row,
        "w1_own": w1,
        "w1_own_sem": w1_sem,
        "nearest_own": float(np.mean(found.nearest_own)),
        "swd": swd,
        "mmd": mmd,
        "edge": edge,
        "edge_sem": edge_sem,
        "inside": inside,
    }


def lesion_rows(model, args) -> tuple[list[dict], dict]:
    data = args.out / "phantom"
    write_phantom(model, data, args.cases, args.real)
    real_cases = find_cases(data, role="pathological")[: args.real]
    ref = sm.real_set(model, real_cases, args.patch_size)
    args.real_patches, args.bandwidth = ref.patches, sm.real_bandwidth(ref.patches)
    reference = {"real_lesions": len(ref.patches), "edge": sm.mean_sem(ref.edge)[0], "inside": sm.mean_sem(ref.inside)[0]}
    reference["swd_real_halves"], reference["mmd_real_halves"] = sm.realism(ref.patches[::2], ref.patches[1::2], args.bandwidth)
    results = []
    for text in args.rows:
        row = lesion_row(model, data, args.out / "rows" / row_name(text), text, args)
        if row is None:
            print(f"{text}: being generated by another process, left out of this table", flush=True)
            continue
        print(json.dumps(row), flush=True)
        results.append(row)
    return results, reference


def mask_rows(model, args) -> tuple[list[dict], dict]:
    from lefusion.masks.diffmask import control_regions, model_box, postprocess, sample_x0
    from lefusion.masks.shape import equivalent_diameter_mm, shape_descriptors
    from lefusion.training.diffmask import prepare_masks

    box = model_box(model)
    with np.load(args.masks_dir / "lidc_masks_test.npz") as f:
        test, _ = prepare_masks(f["masks"], box)
    real_test = [shape_descriptors(m) for m in test]
    rng = np.random.default_rng(0)
    diameters = rng.choice([equivalent_diameter_mm(m) for m in test], size=args.n_masks, replace=True)
    centre = tuple((s - 1) / 2.0 for s in box)
    floor = [shape_descriptors(test[i]) for i in rng.choice(len(test), size=args.n_masks, replace=False)]
    reference = {"real_test": len(test), "shape_distance_real_subset": sm.shape_distance(real_test, floor, reference=real_test)["score"]}
    results = []
    for text in args.rows:
        sampler, seed = parse_row(text)
        cached = args.out / "rows" / row_name(text) / "row.json"
        if cached.is_file():
            results.append(json.loads(cached.read_text()))
            continue
        if not claim(cached.parent):
            print(f"{text}: being run by another process, left out of this table", flush=True)
            continue
        regions = control_regions(model, box, [centre] * len(diameters), diameters, seed)
        counter = CountCalls(model.denoiser)
        started = time.perf_counter()
        x0 = sample_x0(model, regions, None, seed=seed, batch_size=args.batch_size, sampler=sampler).numpy()
        seconds = (time.perf_counter() - started) / len(x0)
        counter.handle.remove()
        batches = -(-len(x0) // args.batch_size)
        evaluations = sampler.network_evaluations(model.schedule.num_timesteps)
        if counter.calls != evaluations * batches:
            raise RuntimeError(f"{text}: the network ran {counter.calls} times, expected {evaluations} x {batches}")
        sized = [postprocess(x, threshold="size", sphere=r) for x, r in zip(x0, regions)]
        own = [postprocess(x, threshold=0.0, sphere=r) for x, r in zip(x0, regions)]
        row = {
            "row": text,
            "sampler": sampler.to_dict(),
            "seed": seed,
            "evaluations": evaluations,
            "counted_calls": counter.calls,
            "seconds": seconds,
            "masks": len(x0),
            **sm.mask_figures(sized, own, diameters, real_test),
        }
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(row, indent=2))
        print(json.dumps(row), flush=True)
        results.append(row)
    return results, reference


def counted(row: dict) -> str:
    """'calls / batches' of every generation run of a row (each batch costs one call per evaluation)."""
    return " + ".join(f"{c['calls']} / {c['batches']}" for c in row["calls_checked"])


def fmt(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def table(model, results: list[dict], reference: dict, args) -> str:
    hu = (model.config.preprocess.window[1] - model.config.preprocess.window[0]) / 2 if model.config.preprocess.modality == "ct" else 1.0
    unit = "HU" if hu != 1.0 else "ROI units"
    if model.kind == "diffmask":
        head = "| sampler | evaluations | s / mask | shape distance | size ±20 % (threshold 0) | median size error | empty |\n|---|---|---|---|---|---|---|"
        lines = [
            f"| {r['row']} | {r['evaluations']} | {fmt(r['seconds'], 2)} | {fmt(r['shape_distance'])} | {fmt(r['size_within_20'])} "
            f"| {fmt(r['median_rel_size_error'])} | {int(r['empty'])} |"
            for r in results
        ]
        return "\n".join([head, *lines])
    if args.timing_only:
        head = "| sampler | evaluations (manifest) | forward calls counted / batches | s / lesion |\n|---|---|---|---|"
        cells = [f"| {r['row']} | {r['evaluations']} | {counted(r)} | {fmt(r['seconds'], 2)} |" for r in results]
        return "\n".join([head, *cells])
    head = (
        f"| sampler | evaluations | s / lesion | W1 to own preset | nearest own | SWD | MMD | edge step ({unit}; real {reference['edge'] * hu:.0f}) "
        f"| inside step ({unit}; real {reference['inside'] * hu:.0f}) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['row']} | {r['evaluations']} | {fmt(r['seconds'], 2)} | {fmt(r['w1_own'])} ± {fmt(r['w1_own_sem'])} | {r['nearest_own'] * 100:.0f} % "
        f"| {fmt(r['swd'])} | {fmt(r['mmd'])} | {r['edge'] * hu:.0f} ± {r['edge_sem'] * hu:.0f} | {r['inside'] * hu:.0f} |"
        for r in results
    ]
    return "\n".join([head, *lines])


def plain(row: dict) -> bool:
    """A sampler at its own defaults apart from its step count (no resampling, default eta / zeta)."""
    settings = {k: v for k, v in row["sampler"].items() if k not in ("kind", "steps")}
    default = dataclasses.asdict(type(parse_row(row["sampler"]["kind"])[0])())
    return row["sampler"]["kind"] == "time-travel" or all(default.get(k) == v for k, v in settings.items())


def plot(model, results: list[dict], path: Path, args, reference: dict | None = None) -> None:
    """One panel per figure against evaluations: a line per sampler through its plain rows, its
    variants (resampling, other eta / zeta) as open markers, real lesions' value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["shape_distance", "size_within_20"] if model.kind == "diffmask" else ["w1_own", "nearest_own", "swd", "edge"]
    real = {"edge": (reference or {}).get("edge"), "swd": (reference or {}).get("swd_real_halves")}
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(np.atleast_1d(axes), keys):
        for i, kind in enumerate(dict.fromkeys(r["sampler"]["kind"] for r in results)):
            colour = f"C{i}"
            rs = sorted((r for r in results if r["sampler"]["kind"] == kind), key=lambda r: r["evaluations"])
            main = [r for r in rs if plain(r) and r["seed"] == 0]
            ax.plot(
                [r["evaluations"] for r in main], [r[key] for r in main], "s" if kind == "ancestral" else "o-", color=colour, label=kind
            )
            other = [r for r in rs if r not in main]
            ax.plot([r["evaluations"] for r in other], [r[key] for r in other], "o", mfc="none", color=colour)
        if real.get(key) is not None:
            ax.axhline(real[key], ls="--", color="grey", lw=1, label="real" if key == "edge" else "real vs real")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per lesion")
        ax.set_title(key)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"{args.model}: quality against network evaluations (open: resampling / other eta, zeta, seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundled model name, lefusion folder or published .pt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", nargs="+", help="samplers, KIND[:K=V,...][@SEED] (default: the standard list for the model's kind)")
    p.add_argument("--cases", type=int, default=4, help="normal ROIs (lesion models); lesions per row = cases x presets")
    p.add_argument("--real", type=int, default=48, help="real pathological phantom cases for realism and seam")
    p.add_argument("--n-masks", type=int, default=48, help="DiffMask requests per row")
    p.add_argument("--masks-dir", type=Path, help="`lefusion masks lidc` output (DiffMask rows)")
    p.add_argument("--presets", type=Path, help="presets JSON for a checkpoint without presets (published .pt)")
    p.add_argument("--roi-shape", type=int, nargs=3, help="override the checkpoint's ROI shape (D H W), e.g. a tiny checkpoint's own size")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--patch-size", type=int, nargs=3, default=(16, 16, 16))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--timing-only", action="store_true", help="evaluations and seconds only (a model with random weights)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    if args.presets is not None:
        from lefusion.control.presets import read_presets

        presets = tuple(read_presets(args.presets, model.config.denoiser.cond_dim))
        model = dataclasses.replace(model, config=dataclasses.replace(model.config, hist_presets=presets))
    if args.roi_shape is not None:
        preprocess = dataclasses.replace(model.config.preprocess, roi_shape=tuple(args.roi_shape))
        model = dataclasses.replace(model, config=dataclasses.replace(model.config, preprocess=preprocess))
    args.patch_size = tuple(min(s, r) for s, r in zip(args.patch_size, model.config.preprocess.roi_shape))
    args.rows = args.rows or (MASK_ROWS if model.kind == "diffmask" else LESION_ROWS)
    results, reference = (mask_rows if model.kind == "diffmask" else lesion_rows)(model, args)
    text = table(model, results, reference, args)
    env = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.batch_size} per batch, CPU"
    command = "python scripts/sampling_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = f"`{command}`\n\n{env}; reference: {json.dumps(reference)}\n\n{text}\n"
    (args.out / "table.md").write_text(report)
    (args.out / "results.json").write_text(json.dumps({"reference": reference, "rows": results}, indent=2))
    if not args.timing_only:
        plot(model, results, args.out / "plot.png", args, reference)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
