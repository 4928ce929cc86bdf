"""Train a segmenter for a fixed number of iterations and predict whole volumes.

Every random draw of iteration i (which cases, which flips) comes from `step_generator(seed, i)`,
and the weights are initialised under `seed`, so a (setting, network, seed) result is reproducible
on CPU and comparable across settings (same seed, same initial weights). Loss: Dice + cross-entropy
(MONAI DiceCELoss); optimiser AdamW with nnU-Net's polynomial learning-rate decay (exponent 0.9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ...training.session import step_generator
from .networks import NetworkPlan, build_network


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one segmenter run."""

    iterations: int = 1000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 3e-5
    amp: bool = True  # mixed precision on CUDA (bfloat16 when supported); ignored on CPU


def random_flips(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample along each spatial axis with probability 1/2, image and label together.

    images, labels: (B, 1, D, H, W). Returns new tensors of the same shapes.
    """
    flips = torch.rand((images.shape[0], 3), generator=generator) < 0.5
    out_images, out_labels = [], []
    for i in range(images.shape[0]):
        axes = [a + 1 for a in range(3) if flips[i, a]]  # +1 skips the channel axis of a sample
        out_images.append(images[i].flip(axes) if axes else images[i])
        out_labels.append(labels[i].flip(axes) if axes else labels[i])
    return torch.stack(out_images), torch.stack(out_labels)


def _precision(device: torch.device, amp: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype or None for full precision, grad scaler or None). Mixed precision only on
    CUDA; bfloat16 where supported (no scaler needed), else float16 with a scaler."""
    if device.type != "cuda" or not amp:
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _loss(loss_fn: torch.nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice+CE of the output; with deep supervision (output (B, S, C, D, H, W), all heads upsampled
    to full size by MONAI) the heads are weighted 1, 1/2, 1/4, ... and normalised, as in nnU-Net."""
    if output.ndim == target.ndim:
        return loss_fn(output.float(), target)
    weights = torch.tensor([0.5**i for i in range(output.shape[1])])
    weights = weights / weights.sum()
    return sum(w * loss_fn(head.float(), target) for w, head in zip(weights, output.unbind(1)))


def train_segmenter(
    plan: NetworkPlan,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    description: str = "train",
    progress: bool = True,
) -> torch.nn.Module:
    """Train network `plan` on images (N, 1, D, H, W) float32 and labels (N, 1, D, H, W) uint8
    class indices (D, H, W = plan.input_shape). Returns the trained network in eval mode."""

    def next_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(images.shape[0], (settings.batch_size,), generator=generator)
        return random_flips(images[index], labels[index], generator)

    return train_network(plan, next_batch, settings, seed, device, description, progress)


BatchSource = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def train_network(
    plan: NetworkPlan,
    next_batch: BatchSource,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    description: str = "train",
    progress: bool = True,
) -> torch.nn.Module:
    """The training loop: `next_batch(generator)` gives iteration i's images (B, 1, D, H, W) float32
    and labels (B, 1, D, H, W) class indices, drawing only from `generator` = step_generator(seed, i)
    (whole cases, or patches of whole scans). Returns the trained network in eval mode."""
    from monai.losses import DiceCELoss

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(plan)
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 - i / settings.iterations) ** 0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    dtype, scaler = _precision(device, settings.amp)
    bar = tqdm(range(settings.iterations), desc=description, unit="it", disable=not progress, leave=False)
    for step in bar:
        x, y = next_batch(step_generator(seed, step))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
        with _autocast(device, dtype):
            output = net(x)
        loss = _loss(loss_fn, output, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        schedule.step()
        if step % 10 == 0 or step == settings.iterations - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


@torch.no_grad()
def predict(net: torch.nn.Module, images: torch.Tensor, device: torch.device, amp: bool = True) -> torch.Tensor:
    """Class-index predictions (N, D, H, W) uint8 for images (N, 1, D, H, W), one volume at a time."""
    dtype, _ = _precision(device, amp)
    predictions = []
    for image in images:
        with _autocast(device, dtype):
            logits = net(image[None].to(device))
        predictions.append(logits.float().argmax(dim=1)[0].to("cpu", torch.uint8))
    return torch.stack(predictions)
