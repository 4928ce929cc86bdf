"""The README's main job, on the embedded phantoms, with the small bundled models.

1. Whole scans: a few lesion-free phantom chests (anisotropic, some oblique) through `lefusion
   augment`: lesion masks from the bundled DiffMask placed inside the built-in lung mask, lesions
   generated into them by the bundled LeFusion model, whole scans with full label maps and a
   preview per scan (axial, coronal and sagittal through every new lesion) out.
2. Texture control: every histogram preset generated into held-out phantom ROIs, as a montage
   (rows: normal ROI, mask, preset 1, 2, 3; one column per case).

`demo_lung` was trained on the lung phantom on a CPU (`scripts/train_bundled_models.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .checkpoints import bundled_model_dir, load_model
from .diffusion.sampling import DEFAULT
from .generation import GenerateConfig, generate_dataset
from .generation.augment import AugmentConfig
from .generation.diffusion_methods import LeFusionGenerator
from .generation.preview import grid_png, lesion_slice, mask_overlay, to_gray
from .io import read_volume
from .jobs import run_augment
from .masks.diffmask import load_diffmask
from .masks.place_dataset import PlaceConfig
from .masks.shapes import DiffMaskShapes
from .phantoms import write_lung_phantom
from .phantoms.chest import write_chest_phantom

DEMO_MODEL = "demo_lung"
DEMO_SAMPLER = DEFAULT  # the default sampler: 25 network evaluations per lesion


def demo_model_dir() -> Path:
    return bundled_model_dir(DEMO_MODEL)


def run_demo(out: Path, seed: int = 0, n_chests: int = 3, n_cases: int = 4) -> Path:
    """Run the demo into `out` (module docstring); returns the folder of augmented scans."""
    start = time.perf_counter()
    augmented = augment_chests(out, seed, n_chests)
    montage = preset_montage(out, seed, n_cases)
    print(
        f"done in {time.perf_counter() - start:.0f} s\n"
        f"  augmented whole scans: {augmented / 'images'}, full label maps: {augmented / 'labels'}\n"
        f"  one preview per scan (overview + axial/coronal/sagittal through each new lesion): {augmented / 'previews'}\n"
        f"  manifest (every lesion's place, size, box, sampler, seed): {augmented / 'manifest.json'}\n"
        f"  texture presets montage (rows: normal ROI, mask, preset 1, 2, 3): {montage}"
    )
    return augmented


def augment_chests(out: Path, seed: int, n_chests: int) -> Path:
    """Part 1: lesion-free phantom chests through `lefusion augment` with the bundled models."""
    chests = out / "chests"
    print(f"writing {n_chests} lesion-free phantom chests (anisotropic 2.5 x 0.8 x 0.8 mm) to {chests}")
    write_chest_phantom(chests, n_normal=n_chests, n_pathological=0, seed=seed)
    model = load_model(demo_model_dir())
    generate = GenerateConfig(presets=("mix",), seed=seed, sampler=DEMO_SAMPLER, batch_size=2 * n_chests, device="cpu")
    method = LeFusionGenerator(model, generate)
    shapes = DiffMaskShapes(load_diffmask("diffmask_lidc"))
    config = AugmentConfig(PlaceConfig(lesions=(2, 2), diameter_mm=(6.0, 12.0), seed=seed), generate)
    record = {"source": "diffmask", "checkpoint": "diffmask_lidc", "sha256": shapes.model.weights_sha256}
    result, _ = run_augment(chests, out / "augmented", method, shapes, record, config)
    print(f"{result.outputs} augmented chests, {result.lesions} new lesions")
    return out / "augmented"


def preset_montage(out: Path, seed: int, n_cases: int) -> Path:
    """Part 2: every texture preset into held-out phantom ROIs, as a montage."""
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
    config = GenerateConfig(presets=presets, seed=seed, sampler=DEMO_SAMPLER, batch_size=n_cases * len(presets))
    manifest_path = generate_dataset(model, data, out / "generated", config)
    return write_montage(
        out / "generated", json.loads(manifest_path.read_text()), out / "montage.png", presets, model.config.preprocess.window
    )


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
