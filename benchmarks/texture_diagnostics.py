"""Why a texture preset does or does not steer: per phantom nodule family, on the model's own
TRAINING masks; prints markdown tables.

    python benchmarks/texture_diagnostics.py --data WORKDIR/lung          # the phantom the model learned
    python benchmarks/texture_diagnostics.py --data DATA --checkpoint RUN/checkpoint --cases 3

(0) Presets vs families: every training lesion's histogram assigned to its nearest preset (W1),
    counted per family; a preset that mixes families cannot ask for one.
(a) Generation: lesions generated with every preset into the training masks of each family (plain
    ancestral sampling), against the real lesions those masks outline: mean HU and the fraction of
    lesion voxels denser than -300 HU (a part-solid nodule's solid core; ground glass stays below).
    If a preset cannot even redraw the family it was fitted on, inside that family's own masks,
    the mask shapes of held-out normals are not the reason it fails there.
(b) One-step denoising of the REAL part-solid lesions noised to step t: the x0 the network predicts
    inside the solid core and in the ground-glass halo, per preset. A model that knows where the core
    goes predicts a brighter core than halo even at high t; one that predicts a uniform haze at high t
    has to create the core later from noise, which an under-trained model does not do.

Needs the phantom's phantom.json (the family of every case); the LeFusion LIDC layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lefusion.checkpoints import load_model
from lefusion.data.dataset import LesionRoiDataset
from lefusion.data.histograms import wasserstein_1d_hist
from lefusion.data.labels import class_masks
from lefusion.data.layouts import find_cases
from lefusion.diffusion.channels import mask_channels, with_context
from lefusion.diffusion.inpainting import inpaint_lesions
from lefusion.diffusion.process import predict_x0, q_sample
from lefusion.diffusion.sampling import Ancestral

DENSE_HU = -300.0
FAMILIES = ("ggo", "part_solid", "solid")


def to_hu(v: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    lo, hi = window
    return (v + 1) / 2 * (hi - lo) + lo


def training_cases(data: Path) -> tuple[list, dict[str, str]]:
    """The pathological training cases and every case's phantom family."""
    families = {c["name"]: c.get("family") for c in json.loads((data / "phantom.json").read_text())["cases"]}
    return [c for c in find_cases(data, role="pathological") if c.split == "train"], families


def preset_table(model, data: Path) -> str:
    cases, families = training_cases(data)
    hists = LesionRoiDataset(cases, model.config.preprocess, model.config.lesion_labels).hists
    presets = torch.tensor(model.config.hist_presets, dtype=torch.float32)
    nearest = wasserstein_1d_hist(hists[:, None].expand(-1, len(presets), -1), presets[None].expand(len(hists), -1, -1)).argmin(1)
    lines = [
        "| family | n | " + " | ".join(f"nearest preset {k + 1}" for k in range(len(presets))) + " |",
        "|" + "---|" * (2 + len(presets)),
    ]
    for family in FAMILIES:
        idx = [i for i, c in enumerate(cases) if families.get(c.name) == family]
        counts = [int((nearest[idx] == k).sum()) for k in range(len(presets))]
        lines.append(f"| {family} | {len(idx)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def family_datasets(model, data: Path, n: int) -> dict[str, LesionRoiDataset]:
    cases, families = training_cases(data)
    out = {}
    for family in FAMILIES:
        chosen = [c for c in cases if families.get(c.name) == family][:n]
        if chosen:
            out[family] = LesionRoiDataset(chosen, model.config.preprocess, model.config.lesion_labels)
    return out


def batch_of(ds: LesionRoiDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """image (B, 1, D, H, W), label (B, 1, D, H, W), lesion bool (B, 1, D, H, W)."""
    image = torch.stack([ds[i]["x"][:1] for i in range(len(ds))])
    label = torch.stack([ds[i]["label"] for i in range(len(ds))])
    return image, label, torch.isin(label, torch.tensor(ds.lesion_labels))


def lesion_stats(image: torch.Tensor, lesion: torch.Tensor, window) -> tuple[float, float]:
    """Mean over cases of (lesion mean HU, fraction of lesion voxels > DENSE_HU)."""
    hu = to_hu(image, window)
    means = [float(hu[i][lesion[i]].mean()) for i in range(len(hu))]
    dense = [float((hu[i][lesion[i]] > DENSE_HU).float().mean()) for i in range(len(hu))]
    return float(np.mean(means)), float(np.mean(dense))


def generation_table(model, sets: dict[str, LesionRoiDataset], seed: int) -> str:
    window = model.config.preprocess.window
    presets = torch.tensor(model.config.hist_presets, dtype=torch.float32)
    lines = [
        "| family (training masks) | n | real: mean HU / dense | "
        + " | ".join(f"preset {k + 1}: mean HU / dense" for k in range(len(presets)))
        + " |",
        "|" + "---|" * (3 + len(presets)),
    ]
    for family, ds in sets.items():
        image, label, lesion = batch_of(ds)
        cells = [family, str(len(ds)), "{:.0f} / {:.2f}".format(*lesion_stats(image, lesion, window))]
        for k in range(len(presets)):
            gens = [torch.Generator().manual_seed(seed + i) for i in range(len(ds))]
            out = inpaint_lesions(
                model.denoiser,
                model.schedule,
                image,
                label,
                model.config.lesion_labels,
                presets[k].expand(len(ds), -1),
                gens,
                Ancestral(),
                mask_input=model.config.mask_input,
            )
            cells.append("{:.0f} / {:.2f}".format(*lesion_stats(out, lesion, window)))
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)  # progress; the table follows on stdout
    return "\n".join(lines)


@torch.no_grad()
def denoising_table(model, ds: LesionRoiDataset, steps: list[int], seed: int) -> str:
    window = model.config.preprocess.window
    presets = torch.tensor(model.config.hist_presets, dtype=torch.float32)
    image, label, lesion = batch_of(ds)
    context = mask_channels(class_masks(label, ds.lesion_labels)) if model.config.mask_input else None
    core = lesion & (to_hu(image, window) > DENSE_HU)
    halo = lesion & ~core
    x = image.expand(-1, len(model.config.lesion_labels), -1, -1, -1)
    gen = torch.Generator().manual_seed(seed)
    lines = [
        "| t | " + " | ".join(f"preset {k + 1}: core / halo HU" for k in range(len(presets))) + " |",
        "|" + "---|" * (1 + len(presets)),
    ]
    for step in steps:
        t = torch.full((len(ds),), step, dtype=torch.long)
        x_t = q_sample(model.schedule, x, t, torch.randn(x.shape, generator=gen))
        cells = [str(step)]
        for k in range(len(presets)):
            x0 = predict_x0(model.schedule, x_t, t, model.denoiser(with_context(x_t, context), t, presets[k].expand(len(ds), -1))).clamp(
                -1, 1
            )[:, :1]
            hu = to_hu(x0, window)
            cells.append(f"{float(hu[core].mean()):.0f} / {float(hu[halo].mean()):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    truth = to_hu(image, window)
    return "\n".join(lines) + f"\n\nReal lesions: core {float(truth[core].mean()):.0f} HU, halo {float(truth[halo].mean()):.0f} HU."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the lung phantom the model was trained on")
    parser.add_argument("--checkpoint", default="demo_lung")
    parser.add_argument("--cases", type=int, default=4, help="training cases per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    print("### (0) Training lesions per family, by nearest preset\n\n" + preset_table(model, args.data) + "\n", flush=True)
    sets = family_datasets(model, args.data, args.cases)
    print(f"### (a) Generation into training masks ({args.checkpoint}; dense = > {DENSE_HU:.0f} HU)\n", flush=True)
    print(generation_table(model, sets, args.seed) + "\n")
    if "part_solid" in sets:
        steps = [round(f * model.schedule.num_timesteps) for f in (0.2, 0.4, 0.6, 0.8, 0.95)]
        print("### (b) x0 predicted from real part-solid lesions noised to step t\n")
        print(denoising_table(model, sets["part_solid"], steps, args.seed))


if __name__ == "__main__":
    main()
