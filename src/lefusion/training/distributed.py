"""Data-parallel training under torchrun: one process per device, one global batch per step.

`torchrun --nproc_per_node N -m lefusion train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; :func:`distributed` joins them into a process group
(NCCL on CUDA, each process on cuda:LOCAL_RANK; gloo on CPU). Without those variables (or with
WORLD_SIZE=1) it is a single process, exactly as before.

Why N processes take the same optimisation steps as one process with the same seed and batch:

- every rank draws the *global* micro-batch from the same seeded generator
  (:func:`~lefusion.training.session.step_generator`) and keeps only its contiguous slice
  (:meth:`Distributed.part`), so the N slices together are the one-process batch;
- DDP averages gradients over ranks. Every training loss here is a mean over the batch
  (the lesion-focused loss divides by all voxels of the batch, not by the lesion's, as in the
  release; the global and DiffMask losses are plain means), so rank r's loss is scaled by
  n_r * N / B (:meth:`Distributed.loss_weight`, 1 for equal slices): the average over ranks of
  the scaled slice gradients is then the gradient of the global batch mean, also for uneven
  slices. A loss normalised by a count that varies per sample (e.g. a mean over lesion voxels
  only) would need the global count instead; none is used.
- gradients are then identical on every rank, so clipping, the Adam step and the EMA update are
  too: every rank holds the same weights and EMA, and only rank 0 writes them.

The one-process and N-process weights agree to float-reduction order (measured in
tests/test_distributed_training.py), not bit for bit: a sum over B samples is split in N sums.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..device import resolve_device
from ..errors import LeFusionError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes; world_size 1 = no process group."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, states and checkpoints and shows progress."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world_size:
            raise LeFusionError(
                f"--batch-size {batch_size} is the global batch over all {self.world_size} processes; "
                f"it needs at least one sample per process"
            )

    def part(self, batch_size: int) -> slice:
        """This rank's contiguous slice of a global batch of `batch_size` samples (sizes differ by at most one)."""
        return slice(self.rank * batch_size // self.world_size, (self.rank + 1) * batch_size // self.world_size)

    def loss_weight(self, batch_size: int) -> float:
        """n_r * N / B: scales this rank's batch-mean loss so that DDP's average over ranks of the
        gradients is the gradient of the mean over the global batch (1.0 for one process)."""
        part = self.part(batch_size)
        return (part.stop - part.start) * self.world_size / batch_size

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """The module to run forward/backward through: DDP around `model` (which keeps its own
        parameters, so save, EMA and clipping use `model` itself), or `model` for one process."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def sync_gradients(self, wrapped: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Around a backward pass: no all-reduce on non-final micro-steps of gradient accumulation
        (DDP's no_sync; the gradients accumulate locally and the final backward reduces them all)."""
        if sync or not isinstance(wrapped, DistributedDataParallel):
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def batch_mean(self, local_mean: float, batch_size: int) -> float:
        """The loss of the global batch from each rank's batch-mean loss (one all-reduce), for the log."""
        if not self.enabled:
            return local_mean
        part = self.part(batch_size)
        value = torch.tensor([local_mean * (part.stop - part.start) / batch_size], dtype=torch.float64, device=self.device)
        dist.all_reduce(value)
        return float(value.item())

    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """True when the torchrun variables describe more than one process."""
    return all(v in os.environ for v in ENV_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def _current(requested: torch.device) -> Distributed:
    if not dist.is_initialized():
        return Distributed(requested)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if requested.type == "cuda" else requested
    return Distributed(device, dist.get_rank(), dist.get_world_size(), local)


@contextlib.contextmanager
def distributed(device: str | torch.device = "auto") -> Iterator[Distributed]:
    """Join the torchrun process group for the duration of a training run (or run alone).

    device: as `TrainConfig.device`; under torchrun a CUDA device becomes cuda:LOCAL_RANK (one
    GPU per process; choose them with CUDA_VISIBLE_DEVICES) and the backend NCCL, a CPU device
    uses gloo. A process group that is already up (e.g. a caller's own) is used and left up.
    A process joins one group: a second one on the same MASTER_PORT after this one is destroyed
    can hang (gloo), so call one training run per torchrun process, as the CLI does.
    """
    requested = resolve_device(device)
    if dist.is_initialized() or not launched_by_torchrun():
        yield _current(requested)
        return
    local = int(os.environ["LOCAL_RANK"])
    if requested.type == "cuda":
        torch.cuda.set_device(local)
        requested = torch.device("cuda", local)
    dist.init_process_group("nccl" if requested.type == "cuda" else "gloo", init_method="env://")
    try:
        current = _current(requested)
        yield current
        # no rank tears the group down while another still has collectives in flight (a gloo
        # group destroyed under a peer's pending work hangs); DDP wrappers made in the block
        # should be gone by now, which is why the trainers build theirs in a function of their own
        current.barrier()
    finally:
        dist.destroy_process_group()
