"""The README's main job: lesions with every texture preset, generated into held-out phantom ROIs.

Uses the small model bundled in `lefusion/assets/demo_lung` (trained on the lung phantom on a CPU;
its folder records the exact command). Writes the phantom, the generated dataset and a montage
(rows: normal ROI, mask, preset 1, 2, 3; one column per case) and prints where they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .checkpoints import bundled_model_dir, load_model
from .diffusion.sampling import Ancestral
from .generation import GenerateConfig, generate_dataset
from .generation.preview import grid_png, lesion_slice, mask_overlay, to_gray
from .io import read_volume
from .phantoms import write_lung_phantom

DEMO_MODEL = "demo_lung"


def demo_model_dir() -> Path:
    return bundled_model_dir(DEMO_MODEL)


def run_demo(out: Path, seed: int = 0, n_cases: int = 4) -> Path:
    """Run the demo into `out`; returns the montage path.

    Plain ancestral sampling (no time travel: 100 network evaluations for the demo model's T = 100)
    keeps the demo to a few minutes on 2 CPU cores; `lefusion generate` defaults to the published
    jump length 10 x 10 repeats.
    """
    start = time.perf_counter()
    model = load_model(demo_model_dir())
    phantom = model.extra.get("phantom", {})
    data = out / "phantom"
    write_lung_phantom(
        data,
        n_pathological=0,
        n_normal=n_cases,
        n_test=0,
        seed=int(phantom.get("seed", 0)),
        roi_shape=tuple(phantom.get("roi_shape", model.config.preprocess.roi_shape)),
        spacing=tuple(phantom.get("spacing", (1.4, 1.4, 1.4))),
    )
    presets = tuple(str(i) for i in range(1, len(model.config.hist_presets) + 1))
    print(f"generating {n_cases} normal ROIs x {len(presets)} presets with the bundled model ({model.weights_sha256[:12]})")
    config = GenerateConfig(presets=presets, seed=seed, sampler=Ancestral(), batch_size=n_cases * len(presets))
    manifest_path = generate_dataset(model, data, out / "generated", config)
    montage = write_montage(
        out / "generated", json.loads(manifest_path.read_text()), out / "montage.png", presets, model.config.preprocess.window
    )
    print(
        f"done in {time.perf_counter() - start:.0f} s\n"
        f"  generated images + labels: {out / 'generated'} (manifest.json lists every output)\n"
        f"  montage (rows: normal ROI, mask, preset {', '.join(presets)}): {montage}"
    )
    return montage


def write_montage(gen_dir: Path, manifest: dict, path: Path, presets: tuple[str, ...], window: tuple[float, float]) -> Path:
    """Rows: normal ROI, mask overlay, one row per preset; columns: cases; each at its largest lesion
    slice, shown in the model's CT `window` (HU)."""
    by_case: dict[str, dict[str, dict]] = {}
    for entry in manifest["outputs"].values():
        by_case.setdefault(entry["source_image"], {})[str(entry["condition"])] = entry

    def hu(a: np.ndarray) -> np.ndarray:
        return (np.clip(a, *window) - window[0]) / (window[1] - window[0]) * 2 - 1

    columns, titles = [], []
    for source, entries in sorted(by_case.items()):
        image = read_volume(source).array
        mask = read_volume(next(iter(entries.values()))["source_mask"]).array
        z = lesion_slice(mask, [1])
        column = [to_gray(hu(image[z])), mask_overlay(hu(image[z]), mask[z] > 0)]
        column += [to_gray(hu(read_volume(gen_dir / entries[p]["image"]).array[z])) for p in presets]
        columns.append(column)
        titles.append(Path(source).name.split("_")[0])
    rows = [list(r) for r in zip(*columns)]
    return grid_png(rows, ["normal", "mask", *(f"preset {p}" for p in presets)], titles, path)
