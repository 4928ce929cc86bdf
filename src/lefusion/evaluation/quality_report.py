"""`lefusion evaluate quality`: image-quality metrics of a `lefusion generate` output folder.

Inputs: the output folder (images/, labels/, manifest.json, from any --method) and the real
dataset (any supported layout). Everything is measured on the ROI the generator worked on, in the
model's [-1, 1] units (data range 2), using the ROI conventions the manifest records; a generated
volume is mapped with its SOURCE volume's intensity mapping (for MRI, re-deriving min-max from the
generated volume could shift it).

Pairing. An output generated on a real pathological case's own mask (P') is paired with that case:
its source image is matched to a pathological case of the real dataset (by resolved path, else,
for a source the manifest marks pathological, by file name). Only then are PSNR / SSIM (whole ROI and lesion) and the histogram distance to the real
lesion defined: they compare the synthetic lesion with the real one it replaced. An output
generated on a normal case (N') has no real counterpart and gets only the unpaired metrics.

Per output (quality.csv, one row each): lesion voxels; paired PSNR / SSIM; W1 between the generated
lesion histogram and the target histogram the manifest records (LeFusion and histogram-driven
hand-crafted outputs; copy-paste has no target) and, for pairs, the real lesion's histogram;
background max / mean absolute error against the source volume, in source units, outside the
lesion labels (exactly 0 when the background was kept, as LeFusion, Copy-Paste and Hand-Crafted
guarantee; Cond-Diffusion regenerates the whole ROI, so its error measures how far it drifts).

Set level: sliced Wasserstein distance and MMD between the lesion patches of all outputs and of all
real pathological cases (every split: nothing is trained on them here).
Summary: quality.md (mean +- sample std per metric; the set metrics) and quality.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PreprocessConfig
from ..data.conventions import DataConventions, conventions_for
from ..data.histograms import lesion_histogram
from ..data.layouts import Case, find_cases
from ..data.roi import PAD_VALUE, Roi, prepare_roi
from ..errors import LeFusionError
from ..io import Volume, atomic_write_text, read_volume
from .patches import lesion_patches
from .quality import (
    ROI_DATA_RANGE,
    background_error,
    histogram_distance,
    median_bandwidth,
    mmd,
    psnr,
    sliced_wasserstein,
    ssim,
)

COLUMNS = (
    "name",
    "method",
    "condition",
    "source_image",
    "paired_with",
    "lesion_voxels",
    "psnr_roi",
    "psnr_lesion",
    "ssim_roi",
    "ssim_lesion",
    "hist_w1_target",
    "hist_w1_real",
    "background_max_abs",
    "background_mean_abs",
)
METRICS = {
    "psnr_roi": "PSNR, whole ROI (dB)",
    "psnr_lesion": "PSNR, lesion (dB)",
    "ssim_roi": "SSIM, whole ROI",
    "ssim_lesion": "SSIM, lesion",
    "hist_w1_target": "histogram W1 to target",
    "hist_w1_real": "histogram W1 to real lesion",
    "background_max_abs": "background max abs error (source units)",
    "background_mean_abs": "background mean abs error (source units)",
}


@dataclass(frozen=True)
class QualityConfig:
    """patch_size: (D, H, W) voxels of each lesion patch; n_projections and seed: sliced Wasserstein."""

    patch_size: tuple[int, int, int] = (16, 16, 16)
    n_projections: int = 128
    seed: int = 0


def read_manifest(generated_dir: Path) -> dict:
    """The manifest of a generate output folder; LeFusionError naming it when missing or empty."""
    path = generated_dir / "manifest.json"
    if not path.is_file():
        raise LeFusionError(f"{path}: not found; --generated must be a `lefusion generate` output folder")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LeFusionError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not manifest.get("outputs"):
        raise LeFusionError(f"{path}: lists no outputs; nothing to evaluate")
    return manifest


def manifest_conventions(manifest: dict, real_dir: Path) -> DataConventions:
    """ROI conventions the outputs were generated with: the manifest's record, else the model
    config of older LeFusion manifests, else the real data layout's defaults."""
    record = manifest.get("conventions") or (manifest.get("model") or {}).get("config")
    if not record:
        return conventions_for(real_dir)
    allowed = record.get("allowed_labels")
    if allowed is None and "context_labels" in record:  # a model config: context + lesion labels
        allowed = sorted({0, *record["context_labels"], *record["lesion_labels"]})
    return DataConventions(
        tuple(record["lesion_labels"]), None if allowed is None else tuple(allowed), PreprocessConfig(**record["preprocess"])
    )


def _real_lookup(real_dir: Path) -> tuple[list[Case], dict[str, Case]]:
    """The real pathological cases, and an index of them by resolved image path and by file name."""
    cases = find_cases(real_dir, role="pathological")
    index: dict[str, Case] = {}
    for case in cases:
        index[str(case.image.resolve())] = case
        index.setdefault(case.image.name, case)
    return cases, index


def _roi_like(volume: Volume, roi: Roi) -> np.ndarray:
    """`volume` cut and mapped exactly as `roi` was (same box, same intensity mapping): (D, H, W)."""
    src, dst = roi.box.slices()
    out = np.full(roi.box.roi_shape, PAD_VALUE, dtype=np.float32)
    out[dst] = roi.mapping.forward(volume.array.transpose(roi.axes)[src])
    return out


def _source(entry: dict, generated_dir: Path) -> Path:
    path = Path(entry["source_image"])
    if not path.is_file():
        raise LeFusionError(f"{generated_dir / 'manifest.json'}: source image {path} of {entry['image']} not found")
    return path


def evaluate_output(
    name: str, entry: dict, generated_dir: Path, conventions: DataConventions, real_index: dict[str, Case], patch_size: tuple[int, int, int]
) -> tuple[dict[str, Any], np.ndarray]:
    """(CSV row, lesion patches (N, *patch_size)) of one output; see the module docstring."""
    labels, bins = conventions.lesion_labels, conventions.preprocess.hist_bins
    generated = read_volume(generated_dir / entry["image"])
    label = read_volume(generated_dir / entry["label"])
    source_path = _source(entry, generated_dir)
    source = read_volume(source_path)
    if generated.shape != source.shape or label.shape != source.shape:
        raise LeFusionError(
            f"{generated_dir / entry['image']}: shape {generated.shape} differs from its source {source_path} {source.shape}"
        )
    bg_max, bg_mean = background_error(generated.array, source.array, np.isin(label.array, labels))

    roi = prepare_roi(source, label, conventions.preprocess, image_path=source_path, label_path=generated_dir / entry["label"])
    gen_roi, label_roi = _roi_like(generated, roi), roi.label[0].numpy()
    lesion = np.isin(label_roi, labels)
    target = entry.get("histogram")
    row: dict[str, Any] = {
        "name": name,
        "method": entry.get("method", "lefusion"),
        "condition": entry.get("condition", ""),
        "source_image": str(source_path),
        "paired_with": "",
        "lesion_voxels": int(lesion.sum()),
        "hist_w1_target": histogram_distance(gen_roi, label_roi, target, labels, bins) if target else math.nan,
        "background_max_abs": bg_max,
        "background_mean_abs": bg_mean,
    }
    real = real_index.get(str(source_path.resolve()))
    if real is None and entry.get("source_role") == "pathological":
        # the data moved since generation: fall back to the file name, only for a pathological
        # source (a normal scan may share a real case's file name, e.g. the same patient's)
        real = real_index.get(source_path.name)
    if real is not None and lesion.any():
        real_roi = _roi_like(read_volume(real.image), roi)
        real_hist = lesion_histogram(torch.from_numpy(real_roi), roi.label[0], labels, bins)
        row.update(paired_with=str(real.image), hist_w1_real=histogram_distance(gen_roi, label_roi, real_hist.tolist(), labels, bins))
        row.update(paired_metrics(gen_roi, real_roi, lesion, roi))
    return row, lesion_patches(gen_roi, label_roi, labels, patch_size)


def paired_metrics(generated: np.ndarray, real: np.ndarray, lesion: np.ndarray, roi: Roi) -> dict[str, float]:
    """PSNR and SSIM, whole ROI and lesion, of two (D, H, W) ROIs in [-1, 1] units.

    Only the voxels the ROI took from the volume count: padding (identical in both) would inflate
    the whole-ROI scores. SSIM is nan when an axis of that region is shorter than 3 voxels.
    """
    _, inside = roi.box.slices()
    g, r, m = generated[inside], real[inside], lesion[inside]
    out = {"psnr_roi": psnr(g, r, ROI_DATA_RANGE), "psnr_lesion": psnr(g, r, ROI_DATA_RANGE, m)}
    try:
        out.update(ssim_roi=ssim(g, r, ROI_DATA_RANGE), ssim_lesion=ssim(g, r, ROI_DATA_RANGE, m))
    except ValueError:
        out.update(ssim_roi=math.nan, ssim_lesion=math.nan)
    return out


def real_patches(cases: list[Case], conventions: DataConventions, patch_size: tuple[int, int, int]) -> np.ndarray:
    """Lesion patches (N, *patch_size) of the real pathological cases, each cut with its own ROI mapping."""
    patches = []
    for case in cases:
        roi = prepare_roi(
            read_volume(case.image), read_volume(case.mask), conventions.preprocess, image_path=case.image, label_path=case.mask
        )  # type: ignore[arg-type]
        patches.append(lesion_patches(roi.image[0].numpy(), roi.label[0].numpy(), conventions.lesion_labels, patch_size))
    return np.concatenate(patches) if patches else np.zeros((0, *patch_size), dtype=np.float32)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: n (finite values), mean and sample std (ddof 1; 0 for one value) over the rows."""
    stats = {}
    for key in METRICS:
        values = np.array([float(r[key]) for r in rows if key in r and np.isfinite(float(r[key]))])
        if len(values):
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            stats[key] = {"n": int(len(values)), "mean": float(values.mean()), "std": std}
    return stats


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """CSV text: floats to 6 significant digits, nan (metric not defined for this row) empty."""
    if not isinstance(value, float):
        return value
    return "" if math.isnan(value) else (f"{value:.6g}" if math.isfinite(value) else str(value))


def _markdown(summary: dict[str, Any]) -> str:
    s = summary
    lines = [
        f"# Image quality of `{s['generated']}` against `{s['real']}`",
        "",
        f"Method: {s['method']}. {s['outputs']} outputs, {s['paired']} paired with the real pathological case "
        "they were generated on (P'), the rest unpaired (N'). Intensities in the model's [-1, 1] ROI units (data range 2), "
        "except the background error (source units).",
        "",
        "| metric | n | mean ± std |",
        "|---|---:|---:|",
    ]
    for key, title in METRICS.items():
        if key in s["metrics"]:
            m = s["metrics"][key]
            lines.append(f"| {title} | {m['n']} | {m['mean']:.4g} ± {m['std']:.2g} |")
    sets = s["sets"]
    lines += [
        "",
        f"Lesion patches ({'×'.join(map(str, sets['patch_size']))} voxels centred on each lesion): "
        f"{sets['n_generated']} generated, {sets['n_real']} real.",
        "",
        "| set metric | value |",
        "|---|---:|",
        f"| sliced Wasserstein-1 ({sets['n_projections']} projections, seed {sets['seed']}) | {_fmt(sets['swd'])} |",
        f"| MMD (Gaussian kernel, median-heuristic σ = {_fmt(sets['bandwidth'])}) | {_fmt(sets['mmd'])} |",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def evaluate_quality(
    generated_dir: str | Path, real_dir: str | Path, out_dir: str | Path, config: QualityConfig = QualityConfig()
) -> dict[str, Any]:
    """Evaluate a generate output folder against the real dataset (module docstring); write
    quality.csv, quality.md and quality.json into `out_dir`. Returns the summary dict."""
    generated_dir, real_dir, out_dir = Path(generated_dir), Path(real_dir), Path(out_dir)
    manifest = read_manifest(generated_dir)
    conventions = manifest_conventions(manifest, real_dir)
    cases, index = _real_lookup(real_dir)
    rows, patches = [], []
    for name, entry in sorted(manifest["outputs"].items()):
        row, found = evaluate_output(name, entry, generated_dir, conventions, index, config.patch_size)
        rows.append(row)
        patches.append(found)
    gen_patches = np.concatenate(patches)
    ref_patches = real_patches(cases, conventions, config.patch_size)
    both = len(gen_patches) > 0 and len(ref_patches) > 0
    pooled = np.concatenate([gen_patches, ref_patches]).reshape(len(gen_patches) + len(ref_patches), -1)
    sigma = median_bandwidth(pooled) if both else None
    summary = {
        "generated": str(generated_dir),
        "real": str(real_dir),
        "method": manifest.get("method", "lefusion"),
        "outputs": len(rows),
        "paired": sum(1 for r in rows if r["paired_with"]),
        "metrics": summarise(rows),
        "sets": {
            "patch_size": list(config.patch_size),
            "n_generated": len(gen_patches),
            "n_real": len(ref_patches),
            "n_projections": config.n_projections,
            "seed": config.seed,
            "swd": sliced_wasserstein(gen_patches, ref_patches, config.n_projections, config.seed) if both else None,
            "mmd": mmd(gen_patches, ref_patches, sigma) if both else None,
            "bandwidth": sigma,
        },
    }
    atomic_write_text(out_dir / "quality.csv", _csv(rows))
    atomic_write_text(out_dir / "quality.md", _markdown(summary))
    atomic_write_text(out_dir / "quality.json", json.dumps(summary, indent=2))
    return summary
