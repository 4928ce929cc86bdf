"""Downstream segmentation benchmark: does adding synthetic lesions improve a segmenter?

    from lefusion.evaluation.segmentation import BenchmarkConfig, parse_synthetic, run_benchmark
    specs = [parse_synthetic("lefusion:N'=gen/normal"), parse_synthetic("copy-paste:N'=gen/cp")]
    paths = run_benchmark("data/lung", specs, "results/seg", BenchmarkConfig(seeds=(0, 1, 2)))

Modules: `sources` (real train/test split, synthetic sets, labels), `settings` (P, P+P', ... by
name), `data` (reading and normalising cases), `networks` (MONAI UNet / DynUNet / SwinUNETR),
`train` (training loop, prediction), `metrics` (Dice / NSD / HD95), `report` (CSV, markdown, PNG),
`benchmark` (the orchestration, resumable).
"""

from .benchmark import BenchmarkConfig, run_benchmark
from .settings import PAPER_SETTINGS, SyntheticSpec, parse_synthetic
from .train import TrainSettings

__all__ = ["BenchmarkConfig", "run_benchmark", "PAPER_SETTINGS", "SyntheticSpec", "parse_synthetic", "TrainSettings"]
