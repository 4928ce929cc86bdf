"""This package's checkpoint format: a folder with `model.safetensors` (the denoiser's weights, in
our parameter names) and `config.json` (a ModelConfig: architecture, schedule, preprocessing,
lesion labels, histogram presets). safetensors holds tensors only, so loading runs no code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..config import ModelConfig
from ..errors import LeFusionError
from ..io import atomic_write_bytes, atomic_write_text

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


def save_checkpoint(
    directory: str | Path, config: ModelConfig, state_dict: dict[str, torch.Tensor], extra: dict[str, Any] | None = None
) -> Path:
    """Write weights then config, each atomically; the config is written last, so a folder with a
    config always has complete weights beside it. Returns the folder."""
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(tensors, metadata={"format": "lefusion", "version": str(FORMAT_VERSION)}))
    record = {"format": "lefusion", "version": FORMAT_VERSION, **config.to_dict(), **({"extra": extra} if extra else {})}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(record, indent=2))
    return directory


def is_checkpoint_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def read_checkpoint(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """-> (config, weights in our names, extra metadata). Errors name the file and the problem."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    try:
        record = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LeFusionError(f"{config_path}: unreadable checkpoint config ({exc})") from exc
    if record.get("format") != "lefusion":
        raise LeFusionError(f'{config_path}: not a lefusion checkpoint config (no "format": "lefusion")')
    try:
        config = ModelConfig.from_dict(record, record.get("extra", {}))
    except (TypeError, ValueError) as exc:
        raise LeFusionError(f"{config_path}: invalid config ({exc})") from exc
    if not weights_path.is_file():
        raise LeFusionError(f"{weights_path}: weights file missing beside {config_path.name}")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise LeFusionError(f"{weights_path}: unreadable safetensors file (truncated or corrupt?): {exc}") from exc
    return config, weights, record.get("extra", {})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
