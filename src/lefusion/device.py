"""Which torch device to run on: one rule for every command ("auto" = CUDA when available)."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda if available, else cpu; anything else is passed to torch.device ("cpu", "cuda:1", ...)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
