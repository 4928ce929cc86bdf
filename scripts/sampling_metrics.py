"""The figures of scripts/sampling_benchmark.py, per generated lesion and per set (numpy in, floats out).

ROIs are the model's (D, H, W) crops in its [-1, 1] units (`prepare_roi` with the checkpoint's
preprocessing), label maps integer ids; a lesion is the union of the model's lesion classes.

- histogram control: W1 (16 bins over [-1, 1], `wasserstein_1d_hist`, mean over the classes
  present) between a generated lesion's histogram and every texture preset; "own" is the preset it
  was generated with, "nearest" whether that preset is the closest one;
- realism: sliced Wasserstein-1 and MMD between lesion patches of a generated set and of the real
  lesions of the same dataset (`lefusion.evaluation.quality`), the MMD bandwidth fixed by the median
  heuristic on the real patches so that rows are comparable;
- seam: mean absolute intensity step between in-plane neighbours (y, x) across the lesion
  boundary (one voxel in, one out), and inside the lesion (both in), against real lesions' values;
- DiffMask: shape distance to held-out real nodules and the network's own size accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lefusion.data.histograms import lesion_histogram, wasserstein_1d_hist
from lefusion.data.roi import prepare_roi
from lefusion.diffusion.model import DiffusionModel
from lefusion.evaluation.patches import lesion_patches
from lefusion.evaluation.quality import median_bandwidth, mmd, sliced_wasserstein
from lefusion.io import read_volume
from lefusion.masks.shape import equivalent_diameter_mm, shape_descriptors, shape_distance


@dataclass
class LesionSet:
    """Per lesion: W1 to its own preset, nearest-is-own, edge and inside steps; lesion patches (N, P)."""

    own_w1: list[float]
    nearest_own: list[bool]
    edge: list[float]
    inside: list[float]
    patches: np.ndarray


def steps_across(image: np.ndarray, lesion: np.ndarray) -> tuple[float, float]:
    """(edge, inside): mean |I(a) - I(b)| over in-plane neighbour pairs (a, b) of (D, H, W) `image`
    with exactly one of them in `lesion`, and with both in it (nan where there is no such pair)."""
    edge, inside = [], []
    for axis in (1, 2):
        a, b = np.swapaxes(image, 0, axis), np.swapaxes(lesion, 0, axis)
        diff = np.abs(a[1:] - a[:-1])
        edge.append(diff[b[1:] != b[:-1]])
        inside.append(diff[b[1:] & b[:-1]])
    e, i = np.concatenate(edge), np.concatenate(inside)
    return (float(e.mean()) if e.size else float("nan"), float(i.mean()) if i.size else float("nan"))


def preset_distances(model: DiffusionModel, image: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """(n_presets,) W1 of the lesion histogram of `image` (1, D, H, W) to each preset, averaged over
    the lesion classes present in `label`."""
    cfg = model.config
    bins, labels = cfg.preprocess.hist_bins, cfg.lesion_labels
    hist = lesion_histogram(image, label, labels, bins).reshape(len(labels), bins)
    present = [k for k, lab in enumerate(labels) if bool((label == lab).any())]
    presets = torch.tensor(cfg.hist_presets).reshape(len(cfg.hist_presets), len(labels), bins)
    out = []
    for preset in presets:
        out.append(float(np.mean([float(wasserstein_1d_hist(hist[k], preset[k])) for k in present])))
    return np.array(out)


def roi_of(model: DiffusionModel, image_path: Path, label_path: Path):
    roi = prepare_roi(read_volume(image_path), read_volume(label_path), model.config.preprocess)
    lesion = np.isin(roi.label[0].numpy(), model.config.lesion_labels)
    return roi, lesion


def generated_set(model: DiffusionModel, out_dir: Path, patch_size: tuple[int, int, int], sources: set[str] | None = None) -> LesionSet:
    """The figures of the outputs of one `generate_dataset` folder (those made on `sources`, default all)."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    found = LesionSet([], [], [], [], np.zeros((0, *patch_size), np.float32))
    patches = []
    for entry in manifest["outputs"].values():
        if sources is not None and entry["source_image"] not in sources:
            continue
        roi, lesion = roi_of(model, out_dir / entry["image"], out_dir / entry["label"])
        d = preset_distances(model, roi.image, roi.label)
        own = int(entry["preset"]) - 1
        found.own_w1.append(float(d[own]))
        found.nearest_own.append(bool(d.argmin() == own))
        edge, inside = steps_across(roi.image[0].numpy(), lesion)
        found.edge.append(edge)
        found.inside.append(inside)
        patches.append(lesion_patches(roi.image[0].numpy(), roi.label[0].numpy(), model.config.lesion_labels, patch_size))
    found.patches = np.concatenate(patches) if patches else found.patches
    return found


def real_set(model: DiffusionModel, cases: list, patch_size: tuple[int, int, int]) -> LesionSet:
    """Edge / inside steps and patches of real pathological cases (a list of `Case`)."""
    found = LesionSet([], [], [], [], np.zeros((0, *patch_size), np.float32))
    patches = []
    for case in cases:
        roi, lesion = roi_of(model, case.image, case.mask)
        edge, inside = steps_across(roi.image[0].numpy(), lesion)
        found.edge.append(edge)
        found.inside.append(inside)
        patches.append(lesion_patches(roi.image[0].numpy(), roi.label[0].numpy(), model.config.lesion_labels, patch_size))
    found.patches = np.concatenate(patches)
    return found


def realism(generated: np.ndarray, real: np.ndarray, bandwidth: float, seed: int = 0) -> tuple[float, float]:
    """(sliced Wasserstein-1 over 128 projections, MMD at `bandwidth`) between two patch sets (N, ...)."""
    g, r = generated.reshape(len(generated), -1), real.reshape(len(real), -1)
    return sliced_wasserstein(g, r, 128, seed), mmd(g, r, bandwidth)


def real_bandwidth(real: np.ndarray) -> float:
    return median_bandwidth(real.reshape(len(real), -1))


def mean_sem(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan-free values)."""
    v = np.array([x for x in values if np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def mask_figures(sized: list[np.ndarray], own: list[np.ndarray], requested: np.ndarray, real_test: list[dict]) -> dict[str, float]:
    """DiffMask figures of one sampler: shape distance of the size-thresholded masks to the real
    test nodules' descriptors, and size accuracy of the network's own masks (threshold 0)."""
    desc = [shape_descriptors(m) for m in sized if m.any()]
    got = np.array([equivalent_diameter_mm(m) for m in own])
    rel = np.abs(got / requested - 1.0)
    return {
        "shape_distance": shape_distance(real_test, desc, reference=real_test)["score"] if desc else float("nan"),
        "empty": float(sum(not m.any() for m in own)),
        "size_within_20": float(np.mean(rel <= 0.2)),
        "median_rel_size_error": float(np.median(rel)),
    }
