"""Resumable training state: one file, written atomically, loadable with weights_only=True."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import LeFusionError
from ..io import atomic_write_bytes

STATE_NAME = "train_state.pt"


def save_state(run_dir: Path, state: dict[str, Any]) -> Path:
    """torch.save to memory, then an atomic write: a kill mid-save leaves the previous state intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(run_dir / STATE_NAME, buffer.getvalue())


def load_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LeFusionError(f"{path}: unreadable training state ({exc}); delete it to start over") from exc
