"""Which torch device to run on: one rule for every command ("auto" = CUDA when available)."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda if available, else cpu; anything else is passed to torch.device ("cpu", "cuda:1", ...).

    Under torchrun (LOCAL_RANK set) "auto" is this process's own GPU, cuda:LOCAL_RANK (modulo the
    GPUs visible), so that one process per GPU does not put every process on the first one.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = os.environ.get("LOCAL_RANK", "")
        if local_rank.isdigit():
            return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
        return torch.device("cuda")
    return torch.device(name)
