"""Training batches: each micro-step's global batch is drawn from its own seeded generator, and this
process builds only its slice of it — in the training process, or ahead of it in DataLoader
worker processes (`workers`), with the same result to the bit.

Micro-step m of step s draws from `step_generator(seed, s, m)` for the whole global batch of B,
in this order: case indices (B, with replacement), flip coins (B), timesteps t (B), noise
(B, K, D, H, W). Every rank makes all of these draws (they are cheap next to the network) and keeps
its slice `part`, so one process with part = everything makes exactly the batches it made before
DDP existed, and N ranks together make that same batch. Nothing depends on which worker builds a
batch, or on how many there are: a batch is a function of its micro-step number alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import LesionRoiDataset, flip_samples
from ..data.volume_dataset import WholeVolumeDataset
from .session import step_generator

Batch = dict[str, torch.Tensor]
BATCH_KEYS = ("x", "masks", "label", "hist")


class MicroBatches(Dataset):
    """Map-style dataset over global micro-step numbers i = step * grad_accum + micro: item i is
    `draw(step_generator(seed, step, micro))`, an already collated batch (DataLoader batch_size=None)."""

    def __init__(self, draw: Callable[[torch.Generator], Batch], seed: int, grad_accum: int = 1) -> None:
        self.draw, self.seed, self.grad_accum = draw, seed, grad_accum

    def __getitem__(self, index: int) -> Batch:
        step, micro = divmod(int(index), self.grad_accum)
        return self.draw(step_generator(self.seed, step, micro))


def micro_batches(batches: MicroBatches, start_step: int, steps: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """The micro-batches of steps [start_step, steps), in order. workers 0 builds each one when it
    is asked for; workers > 0 has that many processes build them ahead (two each in flight), in
    pinned memory when pin_memory (CUDA: then copies can overlap compute)."""
    order = range(start_step * batches.grad_accum, steps * batches.grad_accum)
    if workers <= 0:
        return (batches[i] for i in order)
    loader = DataLoader(
        batches,
        batch_size=None,  # items are whole micro-batches
        sampler=order,
        num_workers=workers,
        pin_memory=pin_memory,
        # the loader seeds its workers from this generator, not from the global RNG; nothing
        # random in a worker uses those seeds (every draw comes from the micro-step's generator)
        generator=torch.Generator().manual_seed(batches.seed),
    )
    return iter(loader)


@dataclass(frozen=True)
class LesionBatchDraw:
    """One micro-step's batch of lesion ROIs: sample B items with replacement, flip each along y
    with p = 0.5 (the release's augmentation), draw t and the noise; keep the samples in `part`.

    Returns x, masks (n, K, D, H, W) float32, label (n, 1, D, H, W) int64, hist (n, K * bins),
    t (n,) int64 and noise (n, K, D, H, W), n = the size of `part`.
    """

    dataset: LesionRoiDataset
    batch_size: int
    num_timesteps: int
    part: slice = field(default_factory=lambda: slice(None))  # all of the batch

    def __call__(self, gen: torch.Generator) -> Batch:
        size = self.batch_size
        index = torch.randint(len(self.dataset), (size,), generator=gen)
        flip = torch.rand(size, generator=gen) < 0.5
        t = torch.randint(self.num_timesteps, (size,), generator=gen)
        items = [self.dataset[int(i)] for i in index[self.part]]
        batch = {key: torch.stack([item[key] for item in items]) for key in BATCH_KEYS}
        batch = flip_samples(batch, flip[self.part])
        noise = torch.randn((size, *batch["x"].shape[1:]), generator=gen)
        return {**batch, "t": t[self.part], "noise": noise[self.part]}


@dataclass(frozen=True)
class VolumeBatchDraw:
    """One micro-step's batch of whole volumes (Lesion-DDPM): sample B scans with replacement, flip
    each left-right (along x = W) with p = 0.5 — brains and their lesion distribution are close to
    symmetric —, draw t and the noise; keep the samples in `part`. Same draw order as
    `LesionBatchDraw` (indices, flips, t, noise).

    Returns x (n, 1, D, H, W), cond (n, E, D, H, W), lesion (n, 1, D, H, W), t (n,), noise (n, 1, D, H, W).
    """

    dataset: WholeVolumeDataset
    batch_size: int
    num_timesteps: int
    part: slice = field(default_factory=lambda: slice(None))

    def __call__(self, gen: torch.Generator) -> Batch:
        size = self.batch_size
        index = torch.randint(len(self.dataset), (size,), generator=gen)
        flip = torch.rand(size, generator=gen) < 0.5
        t = torch.randint(self.num_timesteps, (size,), generator=gen)
        items = [self.dataset[int(i)] for i in index[self.part]]
        batch = {key: torch.stack([item[key] for item in items]) for key in ("x", "cond", "lesion")}
        flipped = flip[self.part]
        batch = {key: torch.where(flipped[:, None, None, None, None], value.flip(-1), value) for key, value in batch.items()}
        noise = torch.randn((size, *batch["x"].shape[1:]), generator=gen)
        return {**batch, "t": t[self.part], "noise": noise[self.part]}
