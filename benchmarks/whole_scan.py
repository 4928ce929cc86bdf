"""Seconds per lesion and peak RAM of `generate` on a whole CT: a synthetic int16 scan of the
size users hold (default 512 x 512 x 300, 0.7 x 0.7 x 1.25 mm, oblique), three lesions, a bundled
model. Each row runs in its own process, so its peak resident memory (ru_maxrss) is the job's own.

    .venv/bin/python benchmarks/whole_scan.py                       # 512 x 512 x 300, demo_lung, ancestral
    .venv/bin/python benchmarks/whole_scan.py --slices 300 400 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

C, S = np.cos(np.radians(12)), np.sin(np.radians(12))


def write_scan(root: Path, slices: int, size: int) -> None:
    """A chest-like int16 volume (air outside a body ellipse, lung-like inside) with three lesion masks."""
    from lefusion.io import Geometry, Volume, write_volume

    geometry = Geometry(spacing=(1.25, 0.7, 0.7), origin=(-180.0, -170.0, -400.0), direction=(C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0))
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    body = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.46 * size)) ** 2 <= 1
    image = np.full((slices, size, size), -1000, np.int16)
    image[:, body] = 40
    lung = ((yy - size / 2) / (0.3 * size)) ** 2 + ((np.abs(xx - size / 2) - 0.2 * size) / (0.15 * size)) ** 2 <= 1
    image[:, lung] = -850
    image += rng.integers(-25, 25, image.shape, dtype=np.int16)
    mask = np.zeros(image.shape, np.uint8)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 60, 60)], indexing="ij"), -1)
    ball = (((grid - (20, 30, 30)) * (1.25, 0.7, 0.7)) ** 2).sum(-1) <= 5.0**2  # 10 mm
    for z, y, x in (
        (slices // 3, size // 2, int(size * 0.3)),
        (slices // 2, int(size * 0.4), int(size * 0.7)),
        (2 * slices // 3, size // 2, int(size * 0.68)),
    ):
        mask[z - 20 : z + 20, y - 30 : y + 30, x - 30 : x + 30][ball] = 1
    write_volume(Volume(image, geometry), root / "images" / "scan.nii.gz")
    write_volume(Volume(mask, geometry), root / "masks" / "scan.nii.gz")


def run_one(data: Path, out: Path, checkpoint: str, sampler: str, threads: int) -> dict:
    import torch

    from lefusion.checkpoints import load_model
    from lefusion.diffusion.sampling import sampler_from_dict
    from lefusion.generation import GenerateConfig, generate_dataset

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = load_model(checkpoint)
    config = GenerateConfig(presets=("1",), sampler=sampler_from_dict({"kind": sampler}), batch_size=3, device="cpu", previews=False)
    manifest = json.loads(generate_dataset(model, data, out, config, progress=False).read_text())
    (entry,) = manifest["outputs"].values()
    return {
        "lesions": len(entry["lesions"]),
        "seconds": time.perf_counter() - t0,
        "seconds_per_lesion": sum(lesion["seconds"] for lesion in entry["lesions"]) / len(entry["lesions"]),
        "network_evaluations": entry["network_evaluations"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[300])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--checkpoint", default="demo_lung")
    parser.add_argument("--sampler", default="ancestral")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]), args.checkpoint, args.sampler, args.threads)))
        return
    rows = []
    for slices in args.slices:
        with tempfile.TemporaryDirectory() as tmp:
            write_scan(Path(tmp) / "data", slices, args.size)
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(Path(tmp) / "data"),
                str(Path(tmp) / "out"),
                "--checkpoint",
                args.checkpoint,
                "--sampler",
                args.sampler,
                "--threads",
                str(args.threads),
            ]
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            rows.append((slices, result))
    print(f"\nwhole-scan generate: {args.checkpoint}, sampler {args.sampler}, {args.threads} thread(s), batch 3, int16 scans\n")
    print("| scan (z, y, x) | lesions | network evaluations | s / lesion (sampling) | whole job s | peak RAM (GB) |")
    print("|---|---|---|---|---|---|")
    for slices, r in rows:
        print(
            f"| {slices} x {args.size} x {args.size} | {r['lesions']} | {r['network_evaluations']} | {r['seconds_per_lesion']:.2f} | "
            f"{r['seconds']:.0f} | {r['peak_rss_gb']:.2f} |"
        )


if __name__ == "__main__":
    main()
