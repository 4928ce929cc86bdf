"""The README's main job. Until a bundled model exists: a smoke run on a tiny random model."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import DenoiserConfig, ScheduleConfig
from .diffusion.repaint import inpaint_lesions
from .diffusion.schedule import NoiseSchedule
from .models import Denoiser


def run_demo(out: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    net = Denoiser(DenoiserConfig(dim=16, channels=1, cond_dim=16)).eval()
    schedule = NoiseSchedule(ScheduleConfig(timesteps=50))
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 1, 8, 32, 32, generator=gen) * 2 - 1
    label = torch.zeros(1, 1, 8, 32, 32, dtype=torch.long)
    label[..., 2:6, 10:20, 10:20] = 1
    start = time.perf_counter()
    result = inpaint_lesions(net, schedule, image, label, (1,), torch.full((16,), 1 / 16), gen, 5, 2)
    background = label == 0
    print(
        f"inpainted one random 8x32x32 ROI with a random-weight model in {time.perf_counter() - start:.1f} s; "
        f"background identical: {torch.equal(result[background], image[background])}; "
        f"lesion voxels changed: {int((result != image).sum())}/{int((~background).sum())}"
    )
