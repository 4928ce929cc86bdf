"""`lefusion evaluate whole-scan`: does `augment` help a segmenter that reads whole scans?

The ROI benchmark (`benchmark.py`) trains on lesion-centred boxes; users train on whole scans.
Here a MONAI 3D U-Net is trained on patches of whole scans (`patches.PatchSampler`, nnU-Net's
one-third lesion-centred sampling) and predicts each held-out whole scan with sliding-window
inference (MONAI, Gaussian-weighted windows). Settings:

- `real`: every training scan of the real dataset (its test split held out), lesion-free scans
  included: a whole-scan segmenter learns from scans without lesions too.
- `real+augmented`: the same scans, with each scan that `--augmented` (a `lefusion augment`
  output) holds under the same name replaced by its augmented version, and augmented scans of
  other names added. When augment ran on the dataset's own lesion-free scans, the two settings see
  the same anatomy and differ only by the synthetic lesions.
- `synthetic`: the `--augmented` scans alone (a synthetic-only training set, as in the
  Lesion-DDPM paper's "trained only on synthetic scans" row); no real lesion is seen in training.

Scores per held-out scan: Dice, NSD and HD95 of the lesion voxels (`metrics.score_case`), and
lesion-level sensitivity and false positives per scan, in and outside the lungs (`lesions`). The
lung mask of a test scan is its organ label map (`--organs`, default REAL/organs/ when present;
TotalSegmentator lobe ids, or any non-zero label; for brains, the brain = every non-zero
anatomy label) or, without one, the built-in lung mask (CT only). Each
(setting, seed) run is saved to OUT/runs/ atomically; a re-run skips saved runs (after checking
they trained on the same scans), so the benchmark resumes. Intensities (`data.Normaliser`, the
same for every setting): CT, nnU-Net's CT scheme fitted on the real training scans' lesion voxels;
MRI, a per-scan z-score over the scan's non-zero voxels (skull-stripped brains keep a 0 surround).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...data.layouts import Case, find_cases
from ...data.roi import validate_pair
from ...data.scans import Scan, organ_mask_path
from ...data.sources import Modality
from ...device import resolve_device
from ...errors import LeFusionError
from ...io import atomic_write_text, read_volume
from ...masks.organs import lung_mask, read_organ_mask
from .data import Normaliser
from .lesions import LesionCounts, count_lesions
from .metrics import score_case
from .networks import plan_network
from .patches import PatchSampler, ScanSample
from .report import _csv, _mean_std
from .train import TrainSettings, _autocast, _precision, train_network

SETTINGS = ("real", "real+augmented")
ALL_SETTINGS = (*SETTINGS, "synthetic")
RUNS = "runs"


@dataclass(frozen=True)
class WholeScanConfig:
    """What to train and how to predict and score it (module docstring)."""

    settings: tuple[str, ...] = SETTINGS
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(iterations=1000, batch_size=2, batch_dice=True))
    patch_shape: tuple[int, int, int] = (32, 64, 64)
    foreground_fraction: float = 1 / 3
    width: int | None = None
    overlap: float = 0.25  # sliding-window overlap (MONAI)
    nsd_tolerance: float = 1.0
    lesion_labels: tuple[int, ...] = (1,)
    organ_labels: tuple[int, ...] | None = None  # None: lung lobes if present, else every non-zero label
    device: str = "auto"
    modality: Modality = "ct"
    organ_name: str = "lungs"  # how the report names the organ of the false-positive split


@dataclass(frozen=True)
class ScanFile:
    name: str
    image: Path
    label: Path
    origin: str  # "real" or "augmented"


# ------------------------------------------------------------------------------------------ the sets


def _labelled(cases: Sequence[Case], root: Path) -> list[Case]:
    missing = [c.name for c in cases if c.mask is None]
    if missing:
        raise LeFusionError(f"{root}: scan(s) without a label map: {', '.join(missing[:5])}")
    return list(cases)


def real_split(real: Path) -> tuple[list[ScanFile], list[ScanFile]]:
    """(training scans, test scans) of the real dataset: its own test split (test.txt), which a
    whole-scan benchmark needs (a seeded split would put a patient's scans on both sides)."""
    cases = _labelled(find_cases(real), real)
    test = [ScanFile(c.name, c.image, c.mask, "real") for c in cases if c.split == "test"]  # type: ignore[arg-type]
    train = [ScanFile(c.name, c.image, c.mask, "real") for c in cases if c.split == "train"]  # type: ignore[arg-type]
    if not test:
        raise LeFusionError(f"{real}: no held-out test scans (list them in a test.txt)")
    if not train:
        raise LeFusionError(f"{real}: every scan is held out for testing; nothing left to train on")
    return train, test


def training_set(setting: str, train: Sequence[ScanFile], test: Sequence[ScanFile], augmented: Path | None) -> list[ScanFile]:
    """The training scans of `setting` (module docstring). Refuses an augmented scan named like a
    test scan: it would put a test patient's anatomy into training."""
    if setting == "real":
        return list(train)
    if setting not in ALL_SETTINGS:
        raise LeFusionError(f"unknown setting {setting!r}; choose from {', '.join(ALL_SETTINGS)}")
    if augmented is None:
        raise LeFusionError(f"setting {setting} needs --augmented (a `lefusion augment` or `generate` output folder)")
    cases = _labelled(find_cases(augmented), augmented)
    if not cases:
        raise LeFusionError(f"{augmented}: no scans found (images/ + masks/ or labels/)")
    leaking = sorted({c.name for c in cases} & {t.name for t in test})
    if leaking:
        raise LeFusionError(f"{augmented}: augmented scan(s) {', '.join(leaking[:5])} are test scans of the real dataset")
    replacement = {c.name: ScanFile(c.name, c.image, c.mask, "augmented") for c in cases}  # type: ignore[arg-type]
    if setting == "synthetic":
        return [replacement[name] for name in sorted(replacement)]
    kept = [replacement.pop(s.name, s) for s in train]
    return kept + [replacement[name] for name in sorted(replacement)]


# ---------------------------------------------------------------------------------------- reading


def read_scan(scan: ScanFile, lesion_labels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(image (D, H, W) in the file's units (HU for CT) as float32, lesion (D, H, W) uint8 0/1, spacing (z, y, x) mm), after
    checking grid, labels and finiteness (LeFusionError naming the files)."""
    image, label = read_volume(scan.image), read_volume(scan.label)
    validate_pair(image, label, lesion_labels, None, scan.image, scan.label, require_lesion=False)
    lesion = np.isin(np.rint(label.array).astype(np.int64), lesion_labels).astype(np.uint8)
    return image.array.astype(np.float32), lesion, tuple(float(s) for s in image.geometry.spacing)  # type: ignore[return-value]


def test_organ(scan: ScanFile, organs: Path | None, labels: tuple[int, ...] | None) -> np.ndarray:
    """The organ of a test scan (bool, its grid): its organ label map, or the built-in lung mask (CT)."""
    if organs is None:
        return lung_mask(scan.image)
    path = organ_mask_path(organs, Scan(scan.name, scan.image, scan.label))
    return read_organ_mask(path, labels, like=scan.image)


# --------------------------------------------------------------------------------------- predicting


@torch.no_grad()
def predict_scan(
    net: torch.nn.Module, image: np.ndarray, patch_shape: tuple[int, int, int], device: torch.device, overlap: float, amp: bool = True
) -> np.ndarray:
    """Lesion prediction (D, H, W) bool of a normalised whole scan (D, H, W), by sliding windows of
    `patch_shape` (Gaussian-weighted, MONAI) and argmax over the two classes."""
    from monai.inferers import sliding_window_inference

    dtype, _ = _precision(device, amp)
    inputs = torch.from_numpy(image)[None, None].to(device)
    with _autocast(device, dtype):
        logits = sliding_window_inference(inputs, patch_shape, sw_batch_size=4, predictor=net, overlap=overlap, mode="gaussian")
    return (logits.float().argmax(dim=1)[0] > 0).cpu().numpy()


# ----------------------------------------------------------------------------------------- running


def _run_path(out: Path, setting: str, seed: int) -> Path:
    return out / RUNS / f"{setting.replace('+', '_plus_')}__seed{seed}.json"


def _load_run(path: Path, names: list[str]) -> dict | None:
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    if run.get("training_scans") != names:
        raise LeFusionError(f"{path}: saved run trained on other scans than this benchmark would; use a new --out")
    return run


def run_whole_scan_benchmark(
    real: str | Path, augmented: str | Path | None, out: str | Path, config: WholeScanConfig, organs: str | Path | None = None
) -> Path:
    """Train, predict and score every (setting, seed) of `config`; returns OUT/summary.md."""
    real, out = Path(real), Path(out)
    augmented = Path(augmented) if augmented is not None else None
    organs = Path(organs) if organs is not None else (real / "organs" if (real / "organs").is_dir() else None)
    train, test = real_split(real)
    sets = {setting: training_set(setting, train, test, augmented) for setting in config.settings}  # every check before any work
    device = resolve_device(config.device)

    print(f"reading {len(test)} test scans and {len({s.image for v in sets.values() for s in v})} training scan files (all settings)")
    cache: dict[Path, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]] = {}
    for scan in [*test, *(s for v in sets.values() for s in v)]:
        if scan.image not in cache:
            cache[scan.image] = read_scan(scan, config.lesion_labels)
    if config.modality == "mri" and organs is None:
        raise LeFusionError(f"{real}: MRI scans need organ label maps for the false-positive split (--organs, or REAL/organs/)")
    normaliser = Normaliser.fit(config.modality, [(cache[s.image][0], cache[s.image][1]) for s in train], nonzero=True)
    organ_masks = {s.name: test_organ(s, organs, config.organ_labels) for s in test}

    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for setting, scans in sets.items():
        samples = [ScanSample.of(s.name, normaliser(cache[s.image][0]), cache[s.image][1], cache[s.image][2]) for s in scans]
        names = [f"{s.origin}:{s.name}" for s in scans]
        for seed in config.seeds:
            path = _run_path(out, setting, seed)
            saved = _load_run(path, names)
            if saved is not None:
                print(f"{setting} seed {seed}: saved in an earlier run, skipped")
                runs.append(saved)
                continue
            runs.append(_train_and_score(setting, seed, samples, names, test, cache, normaliser, organ_masks, config, device, path))
    return write_whole_scan_report(out, runs, config, {k: len(v) for k, v in sets.items()})


def _train_and_score(
    setting, seed, samples, names, test, cache, normaliser, organ_masks, config: WholeScanConfig, device, path: Path
) -> dict:
    start = time.perf_counter()
    plan = plan_network("unet", config.patch_shape, samples[0].spacing, 2, config.width)
    sampler = PatchSampler(samples, plan.input_shape, config.train.batch_size, config.foreground_fraction)
    net = train_network(plan, sampler, config.train, seed, device, description=f"{setting} seed {seed}")
    trained = time.perf_counter() - start
    cases = []
    for scan in test:
        image, lesion, spacing = cache[scan.image]
        prediction = predict_scan(net, normaliser(image), plan.input_shape, device, config.overlap, config.train.amp)
        scores = score_case(prediction, lesion, spacing, config.nsd_tolerance)
        counts = count_lesions(prediction, lesion > 0, organ_masks[scan.name])
        cases.append({"case": scan.name, **dataclasses.asdict(scores), **dataclasses.asdict(counts)})
    training_lesions = sum(_n_lesions(s.lesion) for s in samples)
    run = {
        "setting": setting,
        "seed": seed,
        "training_scans": names,
        "training_lesions": training_lesions,
        "iterations": config.train.iterations,
        "patch_shape": list(plan.input_shape),
        "seconds_train": round(trained, 1),
        "seconds_total": round(time.perf_counter() - start, 1),
        "cases": cases,
    }
    atomic_write_text(path, json.dumps(run, indent=1))
    print(f"{setting} seed {seed}: trained in {trained:.0f} s, scored {len(test)} scans in {run['seconds_total'] - trained:.0f} s")
    return run


def _n_lesions(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask > 0, np.ones((3, 3, 3), bool))[1])


# ------------------------------------------------------------------------------------------ report

PER_CASE_FIELDS = (
    "setting",
    "seed",
    "case",
    "dice",
    "nsd",
    "hd95",
    "reference_lesions",
    "detected",
    "false_positives",
    "false_positives_outside_organ",
)


def seed_metrics(run: dict) -> dict[str, float]:
    """One run's numbers: Dice and NSD means over test scans, HD95 over scans where both masks are
    non-empty, sensitivity over all test lesions, false positives per scan."""
    cases = run["cases"]
    hd = [c["hd95"] for c in cases if math.isfinite(c["hd95"])]
    counts = [
        LesionCounts(*(c[k] for k in ("reference_lesions", "detected", "false_positives", "false_positives_outside_organ"))) for c in cases
    ]
    lesions = sum(c.reference_lesions for c in counts)
    return {
        "dice": float(np.mean([c["dice"] for c in cases])),
        "nsd": float(np.mean([c["nsd"] for c in cases])),
        "hd95": float(np.mean(hd)) if hd else math.nan,
        "sensitivity": sum(c.detected for c in counts) / lesions if lesions else math.nan,
        "fp_per_scan": float(np.mean([c.false_positives for c in counts])),
        "fp_outside_per_scan": float(np.mean([c.false_positives_outside_organ for c in counts])),
    }


COLUMNS = (
    ("dice", "Dice (%)", 100.0),
    ("nsd", "NSD (%)", 100.0),
    ("hd95", "HD95 (mm)", 1.0),
    ("sensitivity", "lesion sensitivity (%)", 100.0),
    ("fp_per_scan", "FP / scan", 1.0),
    ("fp_outside_per_scan", "FP / scan outside {organ}", 1.0),
)


def write_whole_scan_report(out: Path, runs: Sequence[dict], config: WholeScanConfig, n_scans: dict[str, int]) -> Path:
    """OUT/per_case.csv, summary.json and summary.md (mean ± std over seeds of each run's numbers)."""
    rows = [{"setting": r["setting"], "seed": r["seed"], **c} for r in runs for c in r["cases"]]
    atomic_write_text(out / "per_case.csv", _csv(rows, PER_CASE_FIELDS))
    summary = []
    for setting in dict.fromkeys(r["setting"] for r in runs):
        mine = [r for r in runs if r["setting"] == setting]
        per_seed = [seed_metrics(r) for r in mine]
        entry = {
            "setting": setting,
            "seeds": len(mine),
            "training_scans": n_scans[setting],
            "training_lesions": mine[0]["training_lesions"],
        }
        for key, _, _ in COLUMNS:
            entry[key] = dict(zip(("mean", "std"), _mean_std([m[key] for m in per_seed])))
        summary.append(entry)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    header = ["setting", "training scans (lesions)", "seeds", *(label.format(organ=config.organ_name) for _, label, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for entry in summary:
        cells = [entry["setting"], f"{entry['training_scans']} ({entry['training_lesions']})", str(entry["seeds"])]
        for key, _, scale in COLUMNS:
            mean, std = entry[key]["mean"] * scale, entry[key]["std"] * scale
            cells.append("–" if not math.isfinite(mean) else f"{mean:.1f} ± {std:.1f}" if scale == 100.0 else f"{mean:.2f} ± {std:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    n_test = len(runs[0]["cases"]) if runs else 0
    text = (
        "# Whole-scan segmentation benchmark\n\n"
        f"MONAI 3D U-Net trained on {tuple(config.patch_shape)} patches ({config.train.iterations} iterations, batch "
        f"{config.train.batch_size}, one third lesion-centred), sliding-window inference (overlap {config.overlap}) on "
        f"{n_test} held-out whole scans; mean ± std over seeds of each run's mean. Dice / NSD (tolerance "
        f"{config.nsd_tolerance} mm) over all test scans; HD95 over scans where both masks are non-empty; a lesion is "
        "detected when a predicted voxel touches it; a false positive is a predicted component touching no lesion, "
        f"'outside {config.organ_name}' when most of it lies outside the organ mask.\n\n" + "\n".join(lines) + "\n"
    )
    return atomic_write_text(out / "summary.md", text)
