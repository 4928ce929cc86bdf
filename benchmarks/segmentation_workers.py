"""Segmenter runs side by side or one at a time: wall time of `lefusion evaluate segmentation` on
a small lung phantom, for several (workers x threads) layouts of the same cores; prints a table.

    python benchmarks/segmentation_workers.py                       # 1x2 vs 2x1 on 2 cores
    python benchmarks/segmentation_workers.py --layouts 1x4 2x2 4x1 --runs 8

Every layout trains the same runs (setting P, seeds 0..runs-1, the CPU benchmark's U-Net and
iterations) into its own folder, so each starts from nothing. The table says whether the per-case
results came out identical (layouts with other thread counts may differ in float summation order).
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from lefusion.evaluation.segmentation import BenchmarkConfig, TrainSettings, run_benchmark
from lefusion.phantoms import write_lung_phantom


def _layout(text: str) -> tuple[int, int]:
    workers, threads = text.lower().split("x")
    return int(workers), int(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", type=_layout, default=[(1, 2), (2, 1)], metavar="WORKERSxTHREADS")
    parser.add_argument("--runs", type=int, default=4, help="segmenter runs (seeds) per layout")
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lefusion_workers_"))
    data = work / "lung"
    # the CPU benchmark's phantom (seed 1, 12 training + 16 test cases at 16x32x32, 1.4 mm)
    write_lung_phantom(data, n_pathological=28, n_normal=0, n_test=16, seed=1, roi_shape=(16, 32, 32), spacing=(1.4, 1.4, 1.4))
    results, rows = {}, []
    for workers, threads in args.layouts:
        config = BenchmarkConfig(
            settings=("P",),
            seeds=tuple(range(args.runs)),
            train=TrainSettings(iterations=args.iterations),
            workers=workers,
            threads_per_worker=threads,
        )
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # used by the one-process layout; workers set their own
        start = time.perf_counter()
        try:
            paths = run_benchmark(data, [], work / f"out_{workers}x{threads}", config, progress=False)
        finally:
            torch.set_num_threads(before)
        seconds = time.perf_counter() - start
        with open(paths["per_case.csv"], newline="") as handle:
            results[(workers, threads)] = list(csv.DictReader(handle))
        rows.append((workers, threads, seconds))
    first = next(iter(results.values()))
    same = all(r == first for r in results.values())
    print(f"\n{args.runs} U-Net runs x {args.iterations} iterations, setting P (12 training cases); torch {torch.__version__}\n")
    print("| workers x threads | seconds | s per run | speed-up vs first |")
    print("|---|---|---|---|")
    for workers, threads, seconds in rows:
        print(f"| {workers} x {threads} | {seconds:.1f} | {seconds / args.runs:.1f} | {rows[0][2] / seconds:.2f} |")
    print(f"\nper-case results identical across layouts: {same} (other thread counts may change the float summation order)")


if __name__ == "__main__":
    main()
