"""Training-batch throughput against DataLoader workers; prints a markdown table.

    python benchmarks/data_loading.py                          # workers 0 1 2, LIDC-sized 32x64x64 ROIs
    python benchmarks/data_loading.py --workers 0 4 8 --batch-size 16 --step-ms 50

Builds the micro-batches `lefusion train` feeds the network (lesion ROIs sampled with
replacement, flipped, t and noise drawn; `lefusion.training.batches`) from a lung phantom in the
LeFusion LIDC layout, without a network. `--step-ms` stands in for the GPU's time per micro-step
(a sleep, during which workers keep building): workers pay off when building a batch takes a
fair share of a step. samples/s = batch size x micro-batches / wall time, after `--warmup`
micro-batches (which also absorb the workers' start).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def measure(root: Path, roi: tuple[int, int, int], batch: int, workers: int, n: int, warmup: int, step_ms: float) -> float:
    from lefusion.config import PreprocessConfig
    from lefusion.data.conventions import conventions_for
    from lefusion.training.batches import LesionBatchDraw, MicroBatches, micro_batches
    from lefusion.training.run import training_dataset

    dataset = training_dataset(root, conventions_for(root, None, PreprocessConfig(roi_shape=roi)))
    batches = micro_batches(MicroBatches(LesionBatchDraw(dataset, batch, 300), seed=0), 0, warmup + n, workers)
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
        time.sleep(step_ms / 1000)
    return batch * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--roi", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"))
    parser.add_argument("--cases", type=int, default=24, help="pathological phantom cases")
    parser.add_argument("--batches", type=int, default=40, help="timed micro-batches per row")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=0.0, help="simulated network time per micro-batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args()

    import torch

    from lefusion.phantoms import write_lung_phantom

    torch.set_num_threads(args.threads)
    roi = tuple(args.roi)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lung"
        write_lung_phantom(root, n_pathological=args.cases, n_normal=0, n_test=0, seed=0, roi_shape=roi)
        rows = [(w, measure(root, roi, args.batch_size, w, args.batches, args.warmup, args.step_ms)) for w in args.workers]
    print(
        f"\nbatch {args.batch_size} ROIs of {'x'.join(map(str, roi))}, simulated step {args.step_ms:g} ms, {args.batches} micro-batches\n"
    )
    print("| workers | samples/s | vs workers 0 |")
    print("|---:|---:|---:|")
    base = rows[0][1]
    for workers, rate in rows:
        print(f"| {workers} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
