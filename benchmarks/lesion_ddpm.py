"""Lesion-DDPM on held-out phantom brains: does the generated FLAIR follow its condition, and what
does a volume cost?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lesion_ddpm.py --data DIR [--checkpoint demo_brain_lesion_ddpm]
                                      [--sampler ddim --steps 50] [--cases 4]

For the cases in DIR/test.txt (else the first --cases), generates each from its masks + organs
(`generate_volumes`, seed 0) and prints, per case and as a mean, the tissue contrasts relative to
white matter (outside lesions) in the real and the generated scan: CSF / WM, GM / WM and
lesion / WM, plus the seconds per volume. FLAIR's order is CSF < WM < GM and lesions brighter
than WM; a model that ignored its condition would give ratios near 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lefusion.checkpoints import load_model
from lefusion.diffusion.sampling import sampler_from_dict
from lefusion.generation import GenerateConfig, generate_volumes
from lefusion.io import read_volume


def contrasts(image: np.ndarray, organs: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean of CSF, GM and lesion over the mean of white matter (lesion voxels excluded from tissues)."""
    clean = mask == 0
    wm = image[(organs == 3) & clean].mean()
    out = {"CSF/WM": image[(organs == 1) & clean].mean() / wm, "GM/WM": image[(organs == 2) & clean].mean() / wm}
    out["lesion/WM"] = image[mask > 0].mean() / wm if mask.any() else float("nan")
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", default="demo_brain_lesion_ddpm")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cases", type=int, default=4)
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    sampler = sampler_from_dict({"kind": args.sampler, **({"steps": args.steps} if args.sampler != "ancestral" else {})})
    test = (args.data / "test.txt").read_text().split() if (args.data / "test.txt").is_file() else []
    names = test or sorted(p.name.removesuffix(".nii.gz") for p in (args.data / "masks").iterdir())[: args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset"
        for sub in ("masks", "organs"):  # the condition only: no image goes in
            (subset / sub).mkdir(parents=True)
            for name in names:
                (subset / sub / f"{name}.nii.gz").symlink_to((args.data / sub / f"{name}.nii.gz").resolve())
        start = time.perf_counter()
        generate_volumes(model, subset, Path(tmp) / "out", GenerateConfig(seed=0, sampler=sampler, batch_size=1), progress=False)
        seconds = (time.perf_counter() - start) / len(names)
        manifest = json.loads((Path(tmp) / "out" / "manifest.json").read_text())
        rows = []
        for name in names:
            organs = read_volume(args.data / "organs" / f"{name}.nii.gz").array
            mask = read_volume(args.data / "masks" / f"{name}.nii.gz").array
            real = contrasts(read_volume(args.data / "images" / f"{name}.nii.gz").array, organs, mask)
            generated = contrasts(read_volume(Path(tmp) / "out" / manifest["outputs"][f"{name}_lesion-ddpm"]["image"]).array, organs, mask)
            rows.append((name, real, generated))
    keys = ["CSF/WM", "GM/WM", "lesion/WM"]
    print(f"checkpoint {args.checkpoint}; sampler {sampler.to_dict()}; {seconds:.1f} s per volume")
    print("| case | " + " | ".join(f"{k} real | {k} generated" for k in keys) + " |")
    print("|---" * (1 + 2 * len(keys)) + "|")
    for name, real, gen in rows:
        print(f"| {name} | " + " | ".join(f"{real[k]:.2f} | {gen[k]:.2f}" for k in keys) + " |")
    mean = {k: (np.nanmean([r[k] for _, r, _ in rows]), np.nanmean([g[k] for _, _, g in rows])) for k in keys}
    print("| mean | " + " | ".join(f"{mean[k][0]:.2f} | {mean[k][1]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
