"""Benchmark outputs: per-case CSV, summary over seeds (CSV + markdown table) and a bar plot.

Summary statistic, per (setting, method, network, lesion class): for each seed the mean over test
cases (HD95: over cases where both masks are non-empty), then mean ± sample standard deviation of
those per-seed means over seeds (std 0 for a single seed). Misses and false alarms are the mean
count per seed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...io import atomic_write_bytes, atomic_write_text

PER_CASE_FIELDS = (
    "setting",
    "method",
    "network",
    "seed",
    "case",
    "class_id",
    "class",
    "dice",
    "nsd",
    "hd95_mm",
    "reference_voxels",
    "predicted_voxels",
)
ROW_KEY = ("setting", "method", "network")
METRICS = (("dice", "Dice (%)", 100.0), ("nsd", "NSD (%)", 100.0), ("hd95_mm", "HD95 (mm)", 1.0))


def _csv(rows: Sequence[dict], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    return buffer.getvalue()


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std of the finite values (NaN, NaN when there are none; std 0 for one)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def summarise(per_case: Sequence[dict]) -> list[dict]:
    """Per-case rows (fields PER_CASE_FIELDS) -> one summary row per (setting, method, network,
    class), in order of first appearance (see module docstring for the statistic)."""
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for row in per_case:
        key = (*(row[k] for k in ROW_KEY), row["class_id"], row["class"])
        groups.setdefault(key, {}).setdefault(int(row["seed"]), []).append(row)
    summary = []
    for (setting, method, network, class_id, name), seeds in groups.items():
        per_seed = {"dice": [], "nsd": [], "hd95_mm": [], "missed": [], "false_alarms": []}
        for rows in seeds.values():
            per_seed["dice"].append(float(np.mean([r["dice"] for r in rows])))
            per_seed["nsd"].append(float(np.mean([r["nsd"] for r in rows])))
            hd = [r["hd95_mm"] for r in rows if math.isfinite(r["hd95_mm"])]
            per_seed["hd95_mm"].append(float(np.mean(hd)) if hd else math.nan)
            per_seed["missed"].append(sum(r["reference_voxels"] > 0 and r["predicted_voxels"] == 0 for r in rows))
            per_seed["false_alarms"].append(sum(r["reference_voxels"] == 0 and r["predicted_voxels"] > 0 for r in rows))
        out = {
            "setting": setting,
            "method": method,
            "network": network,
            "class_id": class_id,
            "class": name,
            "seeds": len(seeds),
            "test_cases": len(next(iter(seeds.values()))),
        }
        for metric in ("dice", "nsd", "hd95_mm"):
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_std(per_seed[metric])
        out["missed_per_seed"] = float(np.mean(per_seed["missed"]))
        out["false_alarms_per_seed"] = float(np.mean(per_seed["false_alarms"]))
        summary.append(out)
    return summary


SUMMARY_FIELDS = (
    "setting",
    "method",
    "network",
    "class_id",
    "class",
    "seeds",
    "test_cases",
    "dice_mean",
    "dice_std",
    "nsd_mean",
    "nsd_std",
    "hd95_mm_mean",
    "hd95_mm_std",
    "missed_per_seed",
    "false_alarms_per_seed",
)


def _cell(mean: float, std: float, scale: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean * scale:.1f} ± {std * scale:.1f}"


def _count(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def markdown_table(summary: Sequence[dict]) -> str:
    """Rows setting × method (× network when there are several); per lesion class the columns
    Dice (%), NSD (%), HD95 (mm), each mean ± std over seeds; misses noted in the HD95 cell."""
    classes = list(dict.fromkeys(row["class"] for row in summary))
    networks = {row["network"] for row in summary}
    key = ROW_KEY if len(networks) > 1 else ROW_KEY[:2]
    header = [*key] + [f"{name} {label}" for name in classes for _, label, _ in METRICS]
    rows: dict[tuple, dict[str, dict]] = {}
    for row in summary:
        rows.setdefault(tuple(row[k] for k in key), {})[row["class"]] = row
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ident, by_class in rows.items():
        cells = list(ident)
        for name in classes:
            row = by_class.get(name)
            for metric, _, scale in METRICS:
                if row is None:
                    cells.append("")
                    continue
                cell = _cell(row[f"{metric}_mean"], row[f"{metric}_std"], scale)
                if metric == "hd95_mm" and row["missed_per_seed"]:
                    cell += f" ({_count(row['missed_per_seed'])}/{row['test_cases']} missed)"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_plot(summary: Sequence[dict], path: Path) -> Path:
    """Grouped bars: one panel per metric, one group per table row, one bar per lesion class, with
    std-over-seeds error bars. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(row["class"] for row in summary))
    idents = list(dict.fromkeys(tuple(row[k] for k in ROW_KEY) for row in summary))
    several_networks = len({i[2] for i in idents}) > 1
    labels = [" · ".join(i if several_networks else i[:2]) for i in idents]
    lookup = {(tuple(row[k] for k in ROW_KEY), row["class"]): row for row in summary}
    width = 0.8 / len(classes)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(max(6.0, 1.1 * len(idents)) * len(METRICS) / 2, 4.0), squeeze=False)
    for ax, (metric, title, scale) in zip(axes[0], METRICS):
        for k, name in enumerate(classes):
            rows = [lookup.get((ident, name)) for ident in idents]
            means = [r[f"{metric}_mean"] * scale if r else math.nan for r in rows]
            stds = [r[f"{metric}_std"] * scale if r else math.nan for r in rows]
            x = np.arange(len(idents)) + (k - (len(classes) - 1) / 2) * width
            ax.bar(x, np.nan_to_num(means), width, yerr=np.nan_to_num(stds), capsize=3, label=name)
        ax.set_title(title)
        ax.set_xticks(np.arange(len(idents)), labels, fontsize=8, rotation=35, ha="right")
        ax.grid(axis="y", alpha=0.3)
    if len(classes) > 1:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def write_report(per_case: Sequence[dict], out_dir: Path, notes: Sequence[str] = ()) -> dict[str, Path]:
    """per_case.csv, summary.csv, summary.md (notes, then the table) and summary.png in `out_dir`."""
    summary = summarise(per_case)
    paths = {name: out_dir / name for name in ("per_case.csv", "summary.csv", "summary.md", "summary.png")}
    atomic_write_text(paths["per_case.csv"], _csv(per_case, PER_CASE_FIELDS))
    atomic_write_text(paths["summary.csv"], _csv(summary, SUMMARY_FIELDS))
    text = "# Downstream segmentation benchmark\n\n" + "".join(f"- {note}\n" for note in notes) + "\n" + markdown_table(summary)
    atomic_write_text(paths["summary.md"], text)
    bar_plot(summary, paths["summary.png"])
    return paths
