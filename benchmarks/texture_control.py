"""Texture control of the bundled demo model on held-out phantom normals; prints markdown tables.

    python benchmarks/texture_control.py --cases 12            # 12 normal ROIs x 3 presets
    python benchmarks/texture_control.py --checkpoint RUN/checkpoint --data DATA

For each preset: the mean 1-D Wasserstein distance (16 bins over [-1, 1]) between the generated
lesion histograms and every preset's target (each row should be smallest on its own preset), the
mean generated lesion intensity in HU, and the seconds per lesion on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from lefusion.checkpoints import load_model
from lefusion.demo import demo_model_dir
from lefusion.diffusion.sampling import TimeTravel
from lefusion.evaluation.texture import distance_matrix, generated_histograms, mean_intensity
from lefusion.generation import GenerateConfig, generate_dataset
from lefusion.phantoms import write_lung_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(demo_model_dir()))
    parser.add_argument("--data", help="dataset root with normal cases (default: a fresh lung phantom like the demo's)")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jump-length", type=int, default=5)
    parser.add_argument("--jump-n-sample", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--out", help="keep outputs here (default: a temporary folder)")
    parser.add_argument("--device", default="cpu", help="torch device for sampling (cpu, cuda, auto)")
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    work = Path(args.out or tempfile.mkdtemp(prefix="lefusion_texture_"))
    data = Path(args.data) if args.data else work / "phantom"
    if not args.data:
        phantom = model.extra.get("phantom", {})
        write_lung_phantom(
            data,
            n_pathological=0,
            n_normal=args.cases,
            n_test=0,
            seed=int(phantom.get("seed", 0)),
            roi_shape=tuple(phantom.get("roi_shape", model.config.preprocess.roi_shape)),
            spacing=tuple(phantom.get("spacing", (1.4, 1.4, 1.4))),
        )
    presets = tuple(str(i) for i in range(1, len(model.config.hist_presets) + 1))
    config = GenerateConfig(
        presets=presets,
        seed=args.seed,
        sampler=TimeTravel(args.jump_length, args.jump_n_sample),
        batch_size=args.batch_size,
        max_cases=args.cases,
        previews=False,
        device=args.device,
    )
    manifest = json.loads(generate_dataset(model, data, work / "generated", config, progress=True).read_text())
    # seconds per lesion as recorded when each output was generated (a resumed run skips finished ones)
    per_lesion = [e["seconds"] for e in manifest["outputs"].values()]
    hists = generated_histograms(model, work / "generated")
    names, matrix = distance_matrix(model, hists)
    n_out = sum(len(v) for v in hists.values())
    lo, hi = model.config.preprocess.window

    def to_hu(v: float) -> float:
        return (v + 1) / 2 * (hi - lo) + lo

    target_means = [mean_intensity([torch.tensor(p)]) for p in model.config.hist_presets]
    print(
        f"\nmodel {model.weights_sha256[:12]}; {n_out} lesions from {len(names) and len(hists[names[0]])} normal ROIs; "
        f"jump {args.jump_length}/{args.jump_n_sample}; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(
        "| generated with | "
        + " | ".join(f"W1 to preset {j + 1}" for j in range(matrix.shape[1]))
        + " | nearest | mean lesion HU (target) |"
    )
    print("|---|" + "---|" * (matrix.shape[1] + 2))
    for i, name in enumerate(names):
        cells = [f"**{v:.3f}**" if j == matrix[i].argmin() else f"{v:.3f}" for j, v in enumerate(matrix[i])]
        print(
            f"| preset {name} | " + " | ".join(cells) + f" | {int(matrix[i].argmin()) + 1} | "
            f"{to_hu(mean_intensity(hists[name])):.0f} ({to_hu(target_means[int(name) - 1]):.0f}) |"
        )
    seconds = sum(per_lesion) / len(per_lesion)
    print(f"\n{seconds:.1f} s per lesion (sampling time per batch / lesions in it; batch {args.batch_size}, {args.device})")
    (work / "texture_control.json").write_text(json.dumps({"conditions": names, "matrix": matrix.tolist(), "seconds_per_lesion": seconds}))


if __name__ == "__main__":
    main()
