"""Training batches (training/batches.py): DataLoader workers build the very batches of workers=0;
rank slices make up the global batch; the losses are batch means, so slice weights recover them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lefusion.config import DenoiserConfig, PreprocessConfig, ScheduleConfig
from lefusion.data.conventions import conventions_for
from lefusion.diffusion.losses import global_loss, lesion_focused_loss
from lefusion.training import TrainConfig
from lefusion.training.batches import LesionBatchDraw, MicroBatches, micro_batches
from lefusion.training.diffmask import DiffMaskBatchDraw
from lefusion.training.distributed import Distributed
from lefusion.training.run import train_on_folder, training_dataset
from lefusion.training.state import load_state

from .conftest import TINY_LUNG_ROI

pytestmark = pytest.mark.usefixtures("one_thread")

ROI = TINY_LUNG_ROI
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lung(tiny_lung) -> Path:
    return tiny_lung


@pytest.fixture(scope="module")
def dataset(lung):
    return training_dataset(lung, conventions_for(lung, None, PreprocessConfig(roi_shape=ROI)))


def _masks() -> np.ndarray:
    z, y, x = np.mgrid[:12, :12, :12]
    radii = (2.5, 3.5, 4.5)
    return np.stack([((z - 6) ** 2 + (y - 5) ** 2 + (x - 6) ** 2) <= r * r for r in radii])


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("kind", ["lesion", "diffmask"])
def test_workers_build_the_batches_of_workers_0(dataset, kind):
    if kind == "lesion":
        batches = MicroBatches(LesionBatchDraw(dataset, 3, 8), seed=5, grad_accum=2)
    else:
        batches = MicroBatches(DiffMaskBatchDraw(_masks(), 3, 8), seed=5)
    inline = list(micro_batches(batches, 1, 4, workers=0))
    assert len(inline) == 3 * batches.grad_accum
    _assert_same(inline, list(micro_batches(batches, 1, 4, workers=2)))


@pytest.mark.parametrize("batch_size", [4, 3])
def test_rank_slices_make_up_the_global_batch(dataset, batch_size):
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    whole = LesionBatchDraw(dataset, batch_size, 8)(gen())
    ranks = [Distributed(CPU, rank, 2) for rank in range(2)]
    parts = [LesionBatchDraw(dataset, batch_size, 8, r.part(batch_size))(gen()) for r in ranks]
    for key, value in whole.items():
        assert torch.equal(torch.cat([p[key] for p in parts]), value), key
    masks = _masks()
    whole = DiffMaskBatchDraw(masks, batch_size, 8)(gen())
    parts = [DiffMaskBatchDraw(masks, batch_size, 8, part=r.part(batch_size))(gen()) for r in ranks]
    for key, value in whole.items():
        assert torch.equal(torch.cat([p[key] for p in parts]), value), key


@pytest.mark.parametrize("batch_size", [4, 3])
def test_weighted_slice_losses_average_to_the_batch_loss(batch_size):
    # DDP averages the ranks' gradients; each rank scales its batch-mean loss by loss_weight, so the
    # average of the scaled slice losses (and so of their gradients) is the global batch's loss.
    gen = torch.Generator().manual_seed(0)
    pred, noise = torch.randn(batch_size, 2, 4, 6, 6, generator=gen), torch.randn(batch_size, 2, 4, 6, 6, generator=gen)
    masks = (torch.rand(batch_size, 2, 4, 6, 6, generator=gen) < 0.3).float()
    ranks = [Distributed(CPU, rank, 2) for rank in range(2)]
    for loss in (lambda s: lesion_focused_loss(pred[s], noise[s], masks[s]), lambda s: global_loss(pred[s], noise[s])):
        average = sum(r.loss_weight(batch_size) * loss(r.part(batch_size)) for r in ranks) / 2
        assert torch.allclose(average, loss(slice(None)), rtol=1e-6)


def test_training_with_workers_gives_the_weights_of_workers_0(lung, tmp_path):
    tiny, schedule = DenoiserConfig(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8), ScheduleConfig(timesteps=8)
    states = []
    for workers in (0, 2):
        cfg = TrainConfig(steps=2, batch_size=2, grad_accum=2, seed=1, device="cpu", workers=workers)
        run = tmp_path / f"w{workers}"
        train_on_folder(lung, run, cfg, tiny, schedule, preprocess=PreprocessConfig(roi_shape=ROI), progress=False)
        states.append(load_state(run))
    for key in ("model", "ema"):
        for name, value in states[0][key].items():
            assert torch.equal(states[1][key][name], value), f"{key}.{name}"


def test_a_global_batch_smaller_than_the_processes_is_refused():
    from lefusion.errors import LeFusionError

    with pytest.raises(LeFusionError, match="at least one sample per process"):
        Distributed(CPU, 0, 4).check_batch(3)
