"""Denoiser speed, side by side with the public LeFusion network on the same weights; prints tables.

    python benchmarks/network.py                                   # ours only, CPU (+ CUDA if present)
    python benchmarks/network.py --public /path/to/LeFusion/LeFusion # + the public Unet3D, same weights
    python benchmarks/network.py --public SRC --sizes lidc --repeats 3 --modes fwd fwd+bwd
    python benchmarks/network.py --profile lidc                      # where the time goes (per module, per op)
    python benchmarks/network.py --max-batch lidc --devices cuda     # largest batch within 24 / 80 GB

`--public` is the folder that holds the public code's `ddpm/` package (the LeFusion/ folder of a
clone of github.com/M3DV/LeFusion); it needs einops, einops-exts and rotary-embedding-torch==0.1.5
importable (`--public-deps DIR` adds a folder of them to sys.path). Nothing of it is copied here.

Method: one process; the public network is built with a fixed seed, its state dict goes through
our published-checkpoint import (`checkpoints.legacy.split_state`), so both compute with the same
weights; the relative error ||ours - public|| / ||public|| (fp32) is printed first. Every variant
gets one warm-up pass (its peak memory is the one reported), then the variants run interleaved (A B A B ...) `--repeats` times and the
median and the spread (min-max) are reported: on a shared machine a slow moment then hits all
variants alike. Peak memory: on CUDA `max_memory_allocated` above what was allocated before the
pass; on CPU the largest resident-set growth during the pass, sampled every millisecond.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SIZES = {
    # name: (dim, channels, extra_in_channels, cond_dim, dim_mults, heads, dim_head, (D, H, W))
    "lidc": (64, 1, 0, 16, (1, 2, 4, 8), 8, 32, (32, 64, 64)),
    "emidec": (72, 2, 0, 32, (1, 2, 4, 8), 8, 32, (10, 72, 72)),
    "demo": (16, 1, 1, 16, (1, 2, 4), 2, 16, (16, 32, 32)),  # the bundled demo_lung model
}


def build_ours(size: str):
    from lefusion.config import DenoiserConfig
    from lefusion.models import Denoiser

    dim, ch, extra, cond, mults, heads, dh, _ = SIZES[size]
    cfg = DenoiserConfig(dim=dim, channels=ch, extra_in_channels=extra, cond_dim=cond, dim_mults=mults, attn_heads=heads, attn_dim_head=dh)
    return Denoiser(cfg)


def build_public(size: str, source: str, deps: str | None):
    """The public Unet3D at this size, or None where it has no such architecture."""
    dim, ch, extra, cond, mults, heads, dh, _ = SIZES[size]
    if dh != 32:  # its bottleneck attention is always 32 wide per head; ours follows the config
        return None
    sys.path[:0] = [p for p in (deps, source) if p]
    from ddpm.diffusion import Unet3D  # the public code, from --public

    return Unet3D(dim=dim, cond_dim=cond, channels=ch + extra, out_dim=ch, dim_mults=mults, attn_heads=heads, attn_dim_head=dh)


def load_public_weights(ours: torch.nn.Module, public: torch.nn.Module) -> None:
    from lefusion.checkpoints.legacy import split_state

    state = {f"denoise_fn.module.{k}": v for k, v in public.state_dict().items()}
    network, _ = split_state(state, "public network")
    ours.load_state_dict(network)


def inputs(size: str, batch: int, device: str, seed: int = 0):
    _, ch, extra, cond, *_, shape = SIZES[size]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, ch + extra, *shape, generator=g)
    t = torch.randint(0, 300, (batch,), generator=g)
    c = torch.rand(batch, cond, generator=g)
    return x.to(device), t.to(device), (c / c.sum(1, keepdim=True)).to(device)


class PeakMemory:
    """Peak memory above the level before the pass: CUDA allocator, or sampled RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.base = self._rss()
            self.top = self.base
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.top = max(self.top, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.running = False
            self.thread.join()
            self.peak = (max(self.top, self._rss()) - self.base) / 2**20


@dataclass
class Variant:
    name: str
    run: Callable[[], None]
    times: list[float]
    peak_mb: float = 0.0


def make_run(net, x, t, c, mode: str, device: str, dtype: str) -> Callable[[], None]:
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]

    def run() -> None:
        with torch.autocast(device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
            if mode == "fwd":
                with torch.no_grad():
                    net(x, t, c)
            else:
                net(x, t, c).float().square().mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def compare(args, size: str, device: str) -> list[tuple]:
    torch.manual_seed(0)
    public = build_public(size, args.public, args.public_deps) if args.public else None
    ours = build_ours(size)
    if public is not None:
        load_public_weights(ours, public)
        public = public.to(device)
    ours = ours.to(device)
    x, t, c = inputs(size, args.batch, device)
    rows = []
    with torch.no_grad():
        ref = ours(x, t, c).float()
        if public is not None:
            pub = public(x, t, c).float()
            print(f"[{size} {device}] rel. error ours vs public, fp32: {rel_err(ref, pub):.2e}", file=sys.stderr)
        for dtype in args.dtypes if device.startswith("cuda") else []:
            if dtype != "fp32":
                with torch.autocast(device.split(":")[0], dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype])):
                    print(
                        f"[{size} {device}] rel. error ours {dtype} autocast vs ours fp32: {rel_err(ours(x, t, c).float(), ref):.2e}",
                        file=sys.stderr,
                    )
    compiled = None
    if args.compile:
        from lefusion.models import compile_denoiser

        compiled = compile_denoiser(ours, mode="max-autotune" if device.startswith("cuda") else None)
        with torch.no_grad():
            print(f"[{size} {device}] rel. error compiled vs eager: {rel_err(compiled(x, t, c).float(), ref):.2e}", file=sys.stderr)
    for mode in args.modes:
        variants = []
        for dtype in args.dtypes if device.startswith("cuda") else ["fp32"]:
            variants.append(Variant(f"ours {dtype}", make_run(ours, x, t, c, mode, device, dtype), []))
            if compiled is not None:
                variants.append(Variant(f"ours compiled {dtype}", make_run(compiled, x, t, c, mode, device, dtype), []))
        if public is not None:
            variants.append(Variant("public fp32", make_run(public, x, t, c, mode, device, "fp32"), []))
        for v in variants:  # the warm-up pass, whose peak memory is reported
            with PeakMemory(device) as mem:
                v.run()
            v.peak_mb = mem.peak
        for _ in range(args.repeats if mode == "fwd" or args.bwd_repeats is None else args.bwd_repeats):
            for v in variants:
                ours.zero_grad(set_to_none=True)
                if public is not None:
                    public.zero_grad(set_to_none=True)
                start = time.perf_counter()
                v.run()
                v.times.append(time.perf_counter() - start)
        base = next((v for v in variants if v.name == "public fp32"), None)
        for v in variants:
            med = statistics.median(v.times)
            speedup = f"{statistics.median(base.times) / med:.2f}x" if base else ""
            spread = f"{1000 * min(v.times):.0f}-{1000 * max(v.times):.0f}"
            rows.append((size, device, mode, args.batch, v.name, f"{1000 * med:.0f}", spread, f"{v.peak_mb:.0f}", speedup))
            print("  row: | " + " | ".join(str(u) for u in rows[-1]) + " |", file=sys.stderr, flush=True)
    return rows


def profile(size: str, device: str, batch: int) -> None:
    """Per-module wall time (forward hooks) and the top ops (torch.profiler), one forward, no grad."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    net = build_ours(size).to(device).eval()
    x, t, c = inputs(size, batch, device)
    spent: dict[str, float] = {}

    def hook_pair(name: str):
        def pre(module, *_):
            module._started = time.perf_counter()

        def post(module, *_):
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - module._started

        return pre, post

    kinds = ("ResnetBlock", "PreNormResidual", "Conv3d", "ConvTranspose3d", "TimeEmbedding")
    for name, module in net.named_modules():
        if type(module).__name__ in kinds and name.count(".") <= 2 and not name.endswith(".conv"):
            pre, post = hook_pair(name)
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
    with torch.no_grad():
        net(x, t, c)
        spent.clear()
        start = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x, t, c)
        total = time.perf_counter() - start
    groups: dict[str, float] = {}
    for name, sec in spent.items():
        module = net.get_submodule(name)
        kind = type(module.fn).__name__ if hasattr(module, "fn") else type(module).__name__
        groups[kind] = groups.get(kind, 0.0) + sec
    print(f"\nOurs, {size}, batch {batch}, {device}, {torch.get_num_threads()} threads: {1000 * total:.0f} ms under the profiler\n")
    print("| module kind | ms | share |\n|---|---|---|")
    for kind, sec in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {1000 * sec:.0f} | {100 * sec / total:.0f} % |")
    print("\n| op | self ms | calls |\n|---|---|---|")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1000:.0f} | {e.count} |")


def max_batch(size: str, device: str, dtype: str, capacities_gb=(24, 80)) -> None:
    """Largest batch whose training step (fwd+bwd) and inference forward fit each card size (CUDA)."""
    total = torch.cuda.get_device_properties(device).total_memory
    net = build_ours(size).to(device)
    for cap in capacities_gb:
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total), device)
        for mode in ("fwd", "fwd+bwd"):
            lo, hi = 0, 1
            while True:
                try:
                    x, t, c = inputs(size, hi, device)
                    make_run(net, x, t, c, mode, device, dtype)()
                    lo, hi = hi, hi * 2
                except torch.OutOfMemoryError:
                    break
                finally:
                    net.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
            while hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    x, t, c = inputs(size, mid, device)
                    make_run(net, x, t, c, mode, device, dtype)()
                    lo = mid
                except torch.OutOfMemoryError:
                    hi = mid
                finally:
                    net.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
            print(f"| {size} | {cap} GB | {mode} | {dtype} | {lo} |")
    torch.cuda.set_per_process_memory_fraction(1.0, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public", help="folder holding the public code's ddpm/ package (LeFusion/ of its repository)")
    parser.add_argument("--public-deps", help="extra folder for sys.path with einops-exts and rotary-embedding-torch 0.1.5")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"], help="CUDA autocast dtypes (CPU: fp32)")
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bwd-repeats", type=int, default=None, help="repeats of fwd+bwd (default: --repeats)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    parser.add_argument("--profile", metavar="SIZE", choices=list(SIZES), help="print where ours spends a forward pass, then stop")
    parser.add_argument("--max-batch", metavar="SIZE", choices=list(SIZES), help="largest batch for 24 and 80 GB cards (CUDA), then stop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.profile:
        return profile(args.profile, devices[0], args.batch)
    if args.max_batch:
        print("| size | card | mode | dtype | largest batch |\n|---|---|---|---|---|")
        for dtype in args.dtypes:
            max_batch(args.max_batch, "cuda", dtype)
        return
    rows = [row for device in devices for size in args.sizes for row in compare(args, size, device)]
    repeats = f"{args.repeats}" + (f" (fwd+bwd: {args.bwd_repeats})" if args.bwd_repeats else "")
    print(f"\nDenoiser speed (torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {repeats}, interleaved)\n")
    print("| size | device | pass | batch | network | ms (median) | ms (min-max) | peak MB | vs public fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
