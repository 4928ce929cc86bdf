"""Forward-pass benchmark of the denoiser at the published model sizes; prints a markdown table.

    python benchmarks/forward.py                 # CPU float32 (+ CUDA float32 / bf16 if available)
    python benchmarks/forward.py --repeats 5 --batches 1 4 --devices cpu

Each row runs in a fresh subprocess so that its peak memory is its own: peak resident memory of
the process on CPU, torch.cuda.max_memory_allocated on GPU. Time is the median of `repeats`
timed forward passes after one warm-up pass, with torch.no_grad(). Weights are random: speed does
not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

PUBLISHED = {
    # name: (dim, channels, cond_dim, (D, H, W))
    "lidc (dim 64, 32x64x64)": (64, 1, 16, (32, 64, 64)),
    "emidec (dim 72, 2ch, 10x72x72)": (72, 2, 32, (10, 72, 72)),
}


def run_one(model: str, batch: int, device: str, dtype: str, repeats: int) -> dict:
    import torch

    from lefusion.config import DenoiserConfig
    from lefusion.models import Denoiser

    dim, channels, cond_dim, shape = PUBLISHED[model]
    net = Denoiser(DenoiserConfig(dim=dim, channels=channels, cond_dim=cond_dim)).to(device).eval()
    x = torch.randn(batch, channels, *shape, device=device)
    t = torch.randint(0, 300, (batch,), device=device)
    cond = torch.rand(batch, cond_dim, device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")

    def forward() -> None:
        with torch.no_grad(), autocast:
            net(x, t, cond)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    forward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms": 1000 * statistics.median(times), "peak_mb": peak_mb, "params_m": sum(p.numel() for p in net.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one row
        spec = json.loads(args.one)
        print(json.dumps(run_one(**spec)))
        return

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        for dtype in ["fp32", "bf16"] if device == "cuda" else ["fp32"]:
            for model in PUBLISHED:
                for batch in args.batches:
                    spec = {"model": model, "batch": batch, "device": device, "dtype": dtype, "repeats": args.repeats}
                    child = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
                    if child.returncode != 0:
                        rows.append((model, device, dtype, batch, "failed", child.stderr.strip().splitlines()[-1][:60], ""))
                        continue
                    r = json.loads(child.stdout.strip().splitlines()[-1])
                    rows.append((model, device, dtype, batch, f"{r['ms']:.0f}", f"{r['peak_mb']:.0f}", f"{r['params_m']:.1f}"))
                    print(f"  done: {model} {device} {dtype} batch {batch}", file=sys.stderr)
    cpu_note = f"{torch.get_num_threads()} threads" if "cpu" in devices else ""
    print(f"\nDenoiser forward pass (torch {torch.__version__}; {cpu_note}; median of {args.repeats})\n")
    print("| model | device | dtype | batch | ms / forward | peak MB | params (M) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
