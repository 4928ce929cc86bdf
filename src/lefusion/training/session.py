"""What every training loop here shares: seeded per-step generators, EMA, the resumable run
(weights, EMA, optimizer, step, CSV log) and its atomic saving."""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..diffusion.schedule import NoiseSchedule
from ..io import atomic_write_text
from ..models import build_network
from .state import load_state, save_state

LOG_NAME = "log.csv"


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    """The generator of one (micro-)step: every draw of step s depends only on (seed, s, micro), so
    a resumed run repeats the uninterrupted one exactly without saving any RNG state."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 64 + micro) % (2**63))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def read_log(path: Path, before_step: int) -> list[tuple[int, float, float]]:
    """Rows logged before `before_step` (a resumed run re-logs the steps after its last save)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [(int(r["step"]), float(r["loss"]), float(r["seconds"])) for r in csv.DictReader(handle) if int(r["step"]) < before_step]


def write_log(path: Path, rows: list[tuple[int, float, float]]) -> None:
    lines = ["step,loss,seconds"] + [f"{s},{loss:.6f},{sec:.2f}" for s, loss, sec in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass
class TrainingRun:
    """Model, EMA copy, optimizer and schedule of a run, restored from run_dir if it was saved."""

    run_dir: Path
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: NoiseSchedule
    start: int = 0
    log_rows: list[tuple[int, float, float]] = field(default_factory=list)
    writes: bool = True  # False on every torchrun rank but 0: they hold the same state and write nothing

    def finish_step(
        self,
        step: int,
        loss: float,
        *,
        steps: int,
        save_every: int,
        max_grad_norm: float | None,
        ema_every: int,
        ema_start: int,
        ema_decay: float,
        seconds: float,
    ) -> None:
        """After the backward pass(es) of `step`: clip, optimiser step, EMA (a plain copy before
        `ema_start`, as in the release), log, and save every `save_every` steps and at the end."""
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if step % ema_every == 0:
            if step < ema_start:
                self.ema.load_state_dict(self.model.state_dict())
            else:
                update_ema(self.ema, self.model, ema_decay)
        self.log_rows.append((step, loss, seconds))
        if (step + 1) % save_every == 0 or step + 1 == steps:
            self.save(step + 1)

    def save(self, step: int) -> None:
        """Atomically save the resumable state after `step` steps, and the log (only if this process writes)."""
        if not self.writes:
            return
        state = {"step": step, "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict()}
        save_state(self.run_dir, state)
        write_log(self.run_dir / LOG_NAME, self.log_rows)


def open_run(run_dir: Path, model_config: ModelConfig, lr: float, seed: int, device: torch.device, writes: bool = True) -> TrainingRun:
    """Fresh seeded weights (without touching the global RNG), or the saved state of run_dir.

    writes: this process saves the state and the log (under torchrun only rank 0 does; every rank
    reads the same saved state, so all resume from the same step with the same weights)."""
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(model_config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run = TrainingRun(run_dir, model, ema, optimizer, NoiseSchedule(model_config.schedule).to(device), writes=writes)
    state = load_state(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        run.start = int(state["step"])
    run.log_rows = read_log(run_dir / LOG_NAME, before_step=run.start)
    return run
