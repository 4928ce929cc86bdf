"""Reproduce the bundled demo model (src/lefusion/assets/demo_lung) from scratch on a CPU.

    python scripts/train_demo_model.py WORKDIR            # ~20 min on 2 idle CPU cores
    python scripts/train_demo_model.py WORKDIR --bundle   # then copy it into the package

Writes the lung phantom and trains with exactly the commands below (seeded, so the weights are
reproducible on the same torch build); --bundle copies the EMA checkpoint into the package and
records the phantom settings the demo needs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

PHANTOM = {"seed": 0, "roi_shape": [16, 32, 32], "spacing": [1.4, 1.4, 1.4], "n_pathological": 96, "n_normal": 12, "n_test": 8}
PHANTOM_CMD = [
    "phantom", "lung", "--out", "lung", "--n-pathological", "96", "--n-normal", "12", "--n-test", "8",
    "--roi-shape", "16", "32", "32", "--spacing", "1.4", "1.4", "1.4", "--seed", "0",
]
TRAIN_CMD = [
    "train", "--data", "lung", "--out", "run", "--steps", "1000", "--batch-size", "4", "--grad-accum", "1",
    "--lr", "2e-4", "--ema-decay", "0.995", "--ema-every", "1", "--save-every", "250", "--seed", "0",
    "--dim", "16", "--dim-mults", "1", "2", "4", "--heads", "2", "--dim-head", "16", "--timesteps", "100",
    "--roi-shape", "16", "32", "32",
]
ASSET = Path(__file__).resolve().parents[1] / "src" / "lefusion" / "assets" / "demo_lung"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--bundle", action="store_true", help="only copy WORKDIR/run/checkpoint into the package")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    lefusion = [sys.executable, "-m", "lefusion"]
    if not args.bundle:
        subprocess.run(lefusion + PHANTOM_CMD, cwd=args.workdir, check=True)
        subprocess.run(lefusion + TRAIN_CMD, cwd=args.workdir, check=True)
    checkpoint = args.workdir / "run" / "checkpoint"
    ASSET.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint / "model.safetensors", ASSET / "model.safetensors")
    config = json.loads((checkpoint / "config.json").read_text())
    config["source"] = "lefusion demo model, trained on the lung phantom (scripts/train_demo_model.py)"
    config.setdefault("extra", {}).update(
        {"phantom": PHANTOM, "commands": ["lefusion " + " ".join(PHANTOM_CMD), "lefusion " + " ".join(TRAIN_CMD)]}
    )
    (ASSET / "config.json").write_text(json.dumps(config, indent=2))
    print(f"bundled {checkpoint} -> {ASSET}")


if __name__ == "__main__":
    main()
